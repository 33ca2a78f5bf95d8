import type { VaultGrantConfig } from '../../config/schema';
import { BrokerError } from '../../domain/errors';
import type { Lease } from '../../domain/types';
import {
  RevocationRefusedError,
  type CredentialProvider,
  type MintedCredential,
  type MintRequest,
  type RevocationResult,
} from '../provider';
import type { VaultClient } from './vault-client';
import { VaultRequestError, type VaultAuthBlock, type VaultResponse } from './vault-http';

type TokenGrant = Extract<VaultGrantConfig, { mode: 'token' }>;
type DynamicGrant = Extract<VaultGrantConfig, { mode: 'dynamic' }>;

const iso = (ms: number) => new Date(ms).toISOString();

/** Mint failures: Vault said no (a 4xx) is the broker's set-up, anything else an outage. */
function mintError(error: unknown): BrokerError {
  const options = { detail: (error as Error).message, cause: error };
  if (error instanceof VaultRequestError && !error.retryable)
    return new BrokerError(
      'backend_refused',
      'Vault refused to issue the credential; nothing was issued',
      options,
    );
  return new BrokerError(
    'unavailable',
    'a backend the broker needs is unavailable; nothing was issued',
    options,
  );
}

const refused = (detail: string) =>
  new BrokerError('backend_refused', 'Vault refused to issue the credential; nothing was issued', { detail });

/** Where Vault's own TTL ends, when it ends before the lease: the caller is told (`notAfter`). */
function notAfter(
  issuedAtMs: number,
  expiresAtMs: number,
  leaseDurationSeconds: unknown,
): number | undefined {
  if (typeof leaseDurationSeconds !== 'number' || leaseDurationSeconds <= 0) return undefined;
  const endMs = issuedAtMs + leaseDurationSeconds * 1000;
  return endMs < expiresAtMs ? endMs : undefined;
}

/**
 * HashiCorp Vault (or OpenBao). `token` grants create a child token of the broker's own token with exactly
 * the grant's policies, non-renewable, living as long as the lease; `dynamic` grants read a secrets engine
 * path (database/creds/..., aws/creds/...) and keep Vault's lease id. Revocation goes through Vault and is
 * real: the token, or the engine's credential, stops working.
 */
export function createVaultProvider(vault: VaultClient): CredentialProvider {
  async function mintToken(request: MintRequest, grant: TokenGrant): Promise<MintedCredential> {
    const { leaseId, task, identity, issuedAtMs, expiresAtMs } = request;
    const ttl = `${Math.ceil((expiresAtMs - issuedAtMs) / 1000)}s`;
    const body = {
      policies: grant.policies,
      no_default_policy: grant.noDefaultPolicy,
      meta: {
        task: task.id,
        lease: leaseId,
        issuer: identity.issuer,
        subject: identity.subject,
        ...(task.ticket ? { ticket: task.ticket } : {}),
      },
      // Not renewable and capped at the lease: the token cannot outlive the lease even unrevoked.
      ttl,
      explicit_max_ttl: ttl,
      renewable: false,
      num_uses: grant.numUses,
      display_name: `tasklease-${request.grantName}`,
      type: 'service',
    };
    const path = grant.role ? `auth/token/create/${grant.role}` : 'auth/token/create';
    const namespace = grant.namespace ?? vault.defaultNamespace;
    let auth: VaultAuthBlock | null | undefined;
    try {
      auth = (await vault.call('POST', path, { namespace, body }))?.auth;
    } catch (error) {
      throw mintError(error);
    }
    if (!auth?.client_token) throw refused(`Vault ${path} answered without a token`);
    // A token without an accessor (a batch token) cannot be revoked at all: never handed out. Vault refuses
    // batch tokens with explicit_max_ttl anyway; such a token would die at its TTL, the lease's.
    if (!auth.accessor)
      throw refused(
        `Vault ${path} issued a token without an accessor (a batch token?): it could not be revoked`,
      );
    const ends = notAfter(issuedAtMs, expiresAtMs, auth.lease_duration);
    return {
      credential: { token: auth.client_token, accessor: auth.accessor },
      secret: auth.client_token,
      handle: {
        mode: 'token',
        accessor: auth.accessor,
        notAfterMs: String(ends ?? expiresAtMs),
        namespace,
      },
      notAfterMs: ends,
    };
  }

  async function mintDynamic(request: MintRequest, grant: DynamicGrant): Promise<MintedCredential> {
    const { issuedAtMs, expiresAtMs } = request;
    const namespace = grant.namespace ?? vault.defaultNamespace;
    let answer: VaultResponse | undefined;
    try {
      answer = await vault.call('GET', grant.path, { namespace });
    } catch (error) {
      throw mintError(error);
    }
    // A static secret (kv) has no lease: nothing could revoke it, so it is never handed out as a lease.
    if (!answer?.lease_id)
      throw refused(`Vault ${grant.path} returned a secret without a lease: it could not be revoked`);
    const data = answer.data;
    if (!data || typeof data !== 'object') {
      await vault
        .call('POST', 'sys/leases/revoke', { namespace, body: { lease_id: answer.lease_id, sync: true } })
        .catch(() => undefined);
      throw refused(`Vault ${grant.path} answered a lease without data`);
    }
    const ends = notAfter(issuedAtMs, expiresAtMs, answer.lease_duration);
    return {
      credential: { leaseId: answer.lease_id, data },
      secret: JSON.stringify(data),
      handle: {
        mode: 'dynamic',
        vaultLeaseId: answer.lease_id,
        notAfterMs: String(ends ?? expiresAtMs),
        // Revocation goes to exactly this namespace, whatever the worker's own default ('' is the root).
        namespace,
      },
      notAfterMs: ends,
    };
  }

  /** Vault no longer knows it: expired at its TTL, or revoked elsewhere first. Either way nothing is left. */
  function gone(what: string, lease: Lease, nowMs: number): RevocationResult {
    const endMs = Number(lease.handle.notAfterMs);
    if (Number.isFinite(endMs) && nowMs >= endMs - 1000)
      return {
        revocation: 'expired-at-source',
        detail: `Vault no longer knows ${what}: it expired at ${iso(endMs)}`,
      };
    return {
      revocation: 'gone-at-source',
      detail:
        `Vault no longer knows ${what}: it was revoked before its TTL outside this lease ` +
        `(its uses ran out, its parent token went, or someone revoked it in Vault)`,
    };
  }

  /**
   * Permission denied does not heal by retrying: irrevocable at once, with the reason. Anything else runs
   * the retry ladder, 400s included: Vault answers 400 when a secrets engine fails to revoke (a database
   * briefly down), which a later attempt may well get through.
   */
  function revokeError(error: unknown): Error {
    if (error instanceof VaultRequestError && error.failure === 'denied')
      return new RevocationRefusedError(
        `${error.message} — the broker's Vault token cannot revoke this; see docs/vault.md for the policy it needs`,
      );
    return error as Error;
  }

  async function lookupThenRevoke(
    lease: Lease,
    nowMs: number,
    steps: {
      what: string;
      lookup: string;
      revoke: string;
      body: Record<string, unknown>;
      revokeBody?: Record<string, unknown>;
      unknown: string;
      /** The lookup answer is about the same accessor or lease: a 200 from anything else proves nothing. */
      matches: (data: Record<string, unknown>) => boolean;
    },
  ): Promise<RevocationResult | null> {
    // Exactly the namespace recorded at mint ('' is the root); leases without one use the default.
    const namespace = lease.handle.namespace;
    try {
      const data = (await vault.call('POST', steps.lookup, { namespace, body: steps.body }))?.data;
      if (!data || typeof data !== 'object' || !steps.matches(data as Record<string, unknown>))
        throw new VaultRequestError(
          'unavailable',
          200,
          [],
          `Vault ${steps.lookup} answered about something else`,
        );
    } catch (error) {
      if (error instanceof VaultRequestError && error.failure === 'invalid' && error.says(steps.unknown))
        return gone(steps.what, lease, nowMs);
      throw revokeError(error);
    }
    try {
      await vault.call('POST', steps.revoke, { namespace, body: steps.revokeBody ?? steps.body });
    } catch (error) {
      // Vault before 1.10 answered an accessor that had just gone with 400 "invalid accessor".
      if (error instanceof VaultRequestError && error.failure === 'invalid' && error.says(steps.unknown))
        return gone(steps.what, lease, nowMs);
      throw revokeError(error);
    }
    return null;
  }

  async function revoke(lease: Lease, nowMs: number): Promise<RevocationResult> {
    const { mode, accessor, vaultLeaseId } = lease.handle;
    if (mode === 'token' && accessor) {
      const result = await lookupThenRevoke(lease, nowMs, {
        what: `token accessor ${accessor}`,
        body: { accessor },
        unknown: 'invalid accessor',
        matches: (data) => data.accessor === accessor,
        lookup: 'auth/token/lookup-accessor',
        revoke: 'auth/token/revoke-accessor',
      });
      return (
        result ?? {
          revocation: 'vault-revoked',
          detail: `token (accessor ${accessor}) revoked in Vault, with any child token and lease it created`,
        }
      );
    }
    if (mode === 'dynamic' && vaultLeaseId) {
      const result = await lookupThenRevoke(lease, nowMs, {
        what: `lease ${vaultLeaseId}`,
        body: { lease_id: vaultLeaseId },
        matches: (data) => data.id === vaultLeaseId,
        // sync: Vault answers once the secrets engine has revoked the credential, not before.
        revokeBody: { lease_id: vaultLeaseId, sync: true },
        unknown: 'invalid lease',
        lookup: 'sys/leases/lookup',
        revoke: 'sys/leases/revoke',
      });
      return (
        result ?? {
          revocation: 'vault-revoked',
          detail: `lease ${vaultLeaseId} revoked in Vault: the secrets engine revoked the credential`,
        }
      );
    }
    throw new RevocationRefusedError(`lease ${lease.id} has no Vault accessor or lease id on record`);
  }

  return {
    kind: 'vault',
    revocationSemantics:
      'Revoked in Vault itself: a token by its accessor (auth/token/revoke-accessor), a dynamic secret by its ' +
      'lease (sys/leases/revoke), after which it no longer works. Something Vault no longer knows is already gone.',

    async mint(request) {
      const { grant } = request;
      if (grant.provider !== 'vault') throw new Error('vault provider given another grant');
      return grant.mode === 'token' ? mintToken(request, grant) : mintDynamic(request, grant);
    },

    // A credential that never left the broker is revoked all the same: it exists in Vault until it is.
    revoke: (lease, { nowMs }) => revoke(lease, nowMs),
  };
}
