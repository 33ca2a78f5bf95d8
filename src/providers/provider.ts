import type { GrantConfig } from '../config/schema';
import type { Identity, Lease, ProviderKind, Task } from '../domain/types';

export interface MintRequest {
  leaseId: string;
  grantName: string;
  grant: GrantConfig;
  identity: Identity;
  task: Task;
  issuedAtMs: number;
  expiresAtMs: number;
  /** A subset of the grant's scopes the caller narrowed to (token exchange); omitted, all of them. */
  scopes?: readonly string[];
}

export interface MintedCredential {
  /** Returned to the caller once; never stored or logged. */
  credential: Record<string, unknown>;
  /** The secret part, hashed for the lease and the audit. */
  secret: string;
  /** What revocation needs later (an id, an accessor); never a secret. */
  handle: Record<string, string>;
  /**
   * When the credential dies at its source, for a backend whose credentials can outlive the lease (an STS
   * session lasts at least 15 minutes; the broker still revokes it when the lease ends). Returned as `notAfter`.
   */
  notAfterMs?: number;
}

export interface RevocationResult {
  /**
   * What revocation really did, in the backend's terms, e.g. `jwt-denylisted` or `expired-at-source`.
   * Recorded on the lease so nobody reads "revoked" where the backend could only do less.
   */
  revocation: string;
  /** One sentence for people on what was done and what remains, e.g. IAM's propagation delay. */
  detail?: string;
}

export interface RevokeContext {
  nowMs: number;
}

/**
 * The backend refused the revocation in a way retrying cannot change (e.g. Vault: permission denied). The
 * lease becomes irrevocable at once, with this message as the reason, instead of running the retry ladder;
 * the sweeper still tries it again later, once someone may have fixed the cause.
 */
export class RevocationRefusedError extends Error {
  override name = 'RevocationRefusedError';
}

export interface CredentialProvider {
  readonly kind: ProviderKind;
  /** One sentence for operators: what revoking a credential of this provider really achieves. */
  readonly revocationSemantics: string;
  mint(request: MintRequest): Promise<MintedCredential>;
  /**
   * Revokes the credential behind `lease`. Idempotent: revoking twice, or revoking what the backend no
   * longer knows, succeeds. Throws when the backend could not be reached or refused; the caller retries,
   * except after a RevocationRefusedError.
   */
  revoke(lease: Lease, context: RevokeContext): Promise<RevocationResult>;
}

export type ProviderRegistry = ReadonlyMap<ProviderKind, CredentialProvider>;

/** What revoking needs of a provider: the worker holds only this (its JWT half has no signing keys). */
export type CredentialRevoker = Pick<CredentialProvider, 'kind' | 'revocationSemantics' | 'revoke'>;
export type RevokerRegistry = ReadonlyMap<ProviderKind, CredentialRevoker>;
