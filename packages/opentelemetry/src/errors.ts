import { ConnguardError } from '@connguard/core'

/**
 * This tracker already feeds these instruments: a second registration would count every
 * connection twice. Call the first registration's `stop()` first.
 */
export class AlreadyRegisteredError extends ConnguardError {
  constructor(where: string) {
    super(
      'CONNGUARD_ERR_ALREADY_REGISTERED',
      `connguard: this tracker is already registered on ${where}; call the stop() it returned first`,
    )
  }
}
