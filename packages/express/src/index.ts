export * from '@connguard/core'
export {
  type ConnguardExpressOptions,
  type ConnguardMiddleware,
  type ConnguardRequest,
  connguard,
  connguard as default,
  type LiveViewMiddleware,
  type Middleware,
} from './middleware.js'
