export * from '@connguard/core'
export {
  type ConnguardFastifyOptions,
  type ConnguardRouteConfig,
  connguard,
  connguard as default,
  readiness,
} from './plugin.js'
