/**
 * Which undici the client tests load (CONNGUARD_UNDICI, see vitest.config.ts) and whether
 * Node's global fetch takes its dispatchers. An undici 8 dispatcher needs a global fetch
 * from undici 8 too (Node 26): Node 22's (undici 6) and 24's (undici 7) call it with the
 * handler API undici 8 dropped, and it refuses with `invalid onRequestStart method`.
 */
export const undiciMajor = Number(process.env.CONNGUARD_UNDICI ?? '7')
const bundledMajor = Number(process.versions.undici?.split('.')[0] ?? '0')

/** The global fetch accepts a dispatcher of the loaded undici. */
export const globalFetchTakesDispatcher = undiciMajor < 8 || bundledMajor >= 8
