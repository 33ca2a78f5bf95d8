/** Domain types shared by every layer. Times are epoch milliseconds (`...Ms`) unless named otherwise. */

export type IssuerKind = 'github-actions' | 'gitlab' | 'kubernetes' | 'spiffe' | 'oidc';
export type ProviderKind = 'jwt' | 'aws-sts' | 'vault';

/** A verified workload (or admin) identity, derived from an attestation token. */
export interface Identity {
  /** The issuer's name from config (never the raw `iss` URL). */
  issuer: string;
  kind: IssuerKind;
  subject: string;
  /** String claims of the token (nested objects flattened with dots), for policy. */
  claims: Record<string, string>;
  /** SHA-256 (hex) of the token: audit and replay bookkeeping keep this, never the token. */
  tokenSha256: string;
  expiresAtMs: number;
}

export type TaskState = 'open' | 'completed' | 'expired';
export type TaskOutcome = 'succeeded' | 'failed' | 'cancelled';

export interface Task {
  id: string;
  issuer: string;
  subject: string;
  kind: IssuerKind;
  purpose: string;
  ticket: string;
  ref: string;
  /** Grants declared up front; empty means "any grant the policy allows". */
  grants: string[];
  createdAtMs: number;
  expiresAtMs: number;
  state: TaskState;
  outcome?: TaskOutcome;
  summary?: string;
  completedAtMs?: number;
  /**
   * Set on a task a CI job's token exchange created: the SHA-256 of the issuer and the job's signed claims.
   * Only a token of the same job (same key) may see or touch the task, whatever its subject.
   */
  jobKey?: string;
  /** The job's claims as the platform signed them (repository, run, attempt...), for the task record. */
  job?: Record<string, string>;
}

export const LEASE_STATES = [
  'active',
  'revoking',
  'revoked',
  'expired',
  'irrevocable',
  'force-closed',
] as const;
export type LeaseState = (typeof LEASE_STATES)[number];
/**
 * `force-closed`: an admin closed the lease although the backend could not revoke it (`force`); the
 * credential may still work at its source, and the lease says so. Never counted as a clean revocation.
 */
export const TERMINAL_LEASE_STATES: ReadonlySet<LeaseState> = new Set(['revoked', 'expired', 'force-closed']);
/** Revoked or expired: nothing left to do. Every other state is still owed a revocation. */
export const isSettled = (state: LeaseState): boolean => TERMINAL_LEASE_STATES.has(state);

export interface Lease {
  id: string;
  taskId: string;
  grant: string;
  provider: ProviderKind;
  issuer: string;
  subject: string;
  state: LeaseState;
  createdAtMs: number;
  expiresAtMs: number;
  /** What the provider needs to revoke the credential (never the secret itself). */
  handle: Record<string, string>;
  /** SHA-256 (hex) of the credential's secret part. */
  credentialSha256: string;
  /** Set once revocation settles: what it really did, in the backend's terms. */
  revocation?: string;
  /** What revocation did and what remains, in a sentence (e.g. IAM's propagation delay, a role cut-off). */
  revocationDetail?: string;
  revokedAtMs?: number;
  revokeReason?: string;
  attempts: number;
  lastError?: string;
  /** An admin asked to revoke it with `force`: if the backend refuses, the lease is force-closed. */
  forced?: boolean;
}

export const identityKey = (issuer: string, subject: string): string => `${issuer}/${subject}`;

export const ADMIN_ROLES = ['viewer', 'revoker', 'approver', 'admin'] as const;
export type AdminRole = (typeof ADMIN_ROLES)[number];

/** The issuer name a break-glass caller carries in audit, logs and rate limits; no configured issuer may use it. */
export const BREAK_GLASS_ISSUER = 'break-glass';
/** Every break-glass token starts with this, so one is recognised (and kept away from the JWT verifier) at a glance. */
export const BREAK_GLASS_TOKEN_PREFIX = 'tlbg_';

/**
 * An operator who called an admin route with a break-glass token (config `breakGlass`) while the identity
 * provider is down. It is not an `Identity`: nothing on a workload route can ever receive one.
 */
export interface BreakGlassCaller {
  issuer: typeof BREAK_GLASS_ISSUER;
  /** The config entry's `name`. */
  subject: string;
  breakGlass: true;
  roles: readonly AdminRole[];
}

/** Who called an admin route: a verified identity, or a break-glass token's holder. */
export type AdminCaller = Identity | BreakGlassCaller;

export const isBreakGlassCaller = (caller: AdminCaller): caller is BreakGlassCaller =>
  'breakGlass' in caller && caller.breakGlass === true;
