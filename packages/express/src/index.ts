export * from '@connguard/core'
export {
  type ConnguardExpressOptions,
  type ConnguardMiddleware,
  connguard,
  connguard as default,
  type Middleware,
} from './middleware.js'
