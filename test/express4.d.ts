/**
 * `express4` is an npm alias of express@4 (see the root package.json) and ships no types of
 * its own; the tests use only the API Express 4 and 5 share, so Express 5's types describe it.
 */
declare module 'express4' {
  import express from 'express'
  export default express
}
