export * from '@connguard/core'
export { type ConnguardFastifyOptions, connguard, connguard as default } from './plugin.js'
