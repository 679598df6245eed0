export * from '@connguard/core'
export {
  type ConnguardFastifyOptions,
  connguard,
  connguard as default,
  readiness,
} from './plugin.js'
