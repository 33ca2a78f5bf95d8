import type { CredentialRevoker, RevokerRegistry } from '../providers/provider';
import type { WorkerDeps } from '../usecases/deps';
import type { SharedContext } from './shared-context';

/**
 * What `worker` (and the worker half of `dev`) holds: the shared stores and the revokers. No policy engine,
 * no attestation verifier (no issuer JWKS is fetched) and no signing keys: a compromised worker can revoke,
 * never mint a credential or sign a record.
 */
export interface WorkerContext {
  shared: SharedContext;
  deps: WorkerDeps;
}

export function createWorkerContext(shared: SharedContext): WorkerContext {
  const providers: RevokerRegistry = new Map<CredentialRevoker['kind'], CredentialRevoker>([
    ['jwt', shared.jwtRevoker],
    ...shared.backends.map((backend) => [backend.kind, backend] as const),
  ]);
  return { shared, deps: { ...shared.deps, providers } };
}
