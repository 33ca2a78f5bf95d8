import { SignJWT } from 'jose';
import type { Lease, Task } from '../domain/types';
import type { SigningKeyRing } from '../signing/signing-keys';

export const TASK_RECORD_TYPE = 'tasklease-task-record+jwt';

/**
 * A JWS over what the task was and what happened in it, verifiable offline with the broker's JWKS: the
 * evidence that lets an ephemeral workspace be reconstructed after it is gone.
 */
export async function signTaskRecord(
  signingKeys: SigningKeyRing,
  brokerIssuer: string,
  task: Task,
  leases: readonly Lease[],
  nowMs: number,
): Promise<string> {
  const { active } = signingKeys;
  return new SignJWT({
    task: {
      id: task.id,
      issuer: task.issuer,
      subject: task.subject,
      kind: task.kind,
      purpose: task.purpose,
      ticket: task.ticket,
      ref: task.ref,
      declaredGrants: task.grants,
      createdAt: new Date(task.createdAtMs).toISOString(),
      expiresAt: new Date(task.expiresAtMs).toISOString(),
      state: task.state,
      outcome: task.outcome ?? null,
      summary: task.summary ?? null,
      completedAt: task.completedAtMs ? new Date(task.completedAtMs).toISOString() : null,
      ...(task.job ? { job: task.job } : {}),
    },
    grantsIssued: [...new Set(leases.map((lease) => lease.grant))].sort(),
    leases: [...leases]
      .sort((a, b) => a.createdAtMs - b.createdAtMs || a.id.localeCompare(b.id))
      .map((lease) => ({
        id: lease.id,
        grant: lease.grant,
        provider: lease.provider,
        issuedAt: new Date(lease.createdAtMs).toISOString(),
        expiresAt: new Date(lease.expiresAtMs).toISOString(),
        credentialSha256: lease.credentialSha256,
      })),
  })
    .setProtectedHeader({ alg: active.alg, kid: active.kid, typ: TASK_RECORD_TYPE })
    .setIssuer(brokerIssuer)
    .setSubject(task.id)
    .setIssuedAt(Math.floor(nowMs / 1000))
    .sign(active.privateKey);
}
