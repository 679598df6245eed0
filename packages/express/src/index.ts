export {
  connguard,
  connguard as default,
  type ConnguardExpressOptions,
  type ConnguardMiddleware,
  type Middleware,
} from './middleware.js'
export * from '@connguard/core'
