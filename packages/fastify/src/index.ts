export * from '@connguard/core'
export {
  type ConnguardFastifyOptions,
  type ConnguardRouteConfig,
  connguard,
  connguard as default,
} from './plugin.js'
