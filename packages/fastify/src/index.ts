export { connguard, connguard as default, type ConnguardFastifyOptions } from './plugin.js'
export * from '@connguard/core'
