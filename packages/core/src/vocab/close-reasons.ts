/**
 * Why a connection ended: one vocabulary for events, metrics and logs. Names
 * follow Kestrel's `error.type` values where one exists, so dashboards built
 * for ASP.NET read the same.
 */
export const CLOSE_REASONS = [
  'tls_handshake_timeout',
  'tls_handshake_failed',
  'request_headers_timeout',
  'keep_alive_timeout',
  'min_request_body_data_rate',
  'min_response_data_rate',
  'request_timeout',
  'ping_timeout',
  // An upgraded WebSocket no library is linked to, silent both ways for `webSocket.idleTimeout`.
  'upgrade_idle_timeout',
  // Client side only (@connguard/client): the TCP connect did not complete within the
  // connect timeout (undici's `connectTimeout`); during TLS it is tls_handshake_timeout.
  'connect_timeout',
  'max_connection_age',
  'max_requests_per_connection',
  'max_concurrent_connections_exceeded',
  'max_connections_per_ip_exceeded',
  'max_concurrent_handshakes_exceeded',
  // A WebSocket upgrade over `maxUpgradedConnections` (Kestrel's MaxConcurrentUpgradedConnections), answered 503.
  'max_concurrent_upgraded_connections_exceeded',
  'app_shutdown',
  'app_shutdown_timeout',
  'shed_under_pressure',
  'invalid_request',
  'client_closed',
  'connection_reset',
  'server_closed',
  'error',
] as const

export type CloseReason = (typeof CLOSE_REASONS)[number]
