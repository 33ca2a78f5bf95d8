import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RedisClient } from '../../redis/connection';
import type { RedisKeys } from '../../redis/keys';
import { runScript } from '../../redis/scripts';
import {
  cutOffAll,
  parseDenyDocument,
  policySize,
  prune,
  renderDenyDocument,
  type DeniedSession,
  type DenyDocument,
} from './deny-policy';

/** The two IAM calls revocation needs (`iam:GetRolePolicy`, `iam:PutRolePolicy`). */
export interface RolePolicyStore {
  /** The policy text, or undefined when the role has no such inline policy. */
  get(roleName: string, policyName: string): Promise<string | undefined>;
  /** Throws PolicyTooLargeError when IAM refuses the size (LimitExceeded). */
  put(roleName: string, policyName: string, document: string): Promise<void>;
}

export class PolicyTooLargeError extends Error {
  override name = 'PolicyTooLargeError';
}

export interface RoleTarget {
  roleArn: string;
  policyName: string;
  /** Characters the broker's policy may take (`revocationPolicyMaxChars`). */
  maxChars: number;
  /** Where IAM is reached. */
  where: { region: string; iamEndpoint?: string };
}

export type DenyOutcome =
  /** The session is listed by name in the deny policy. */
  | { kind: 'listed' }
  /** Every session of the role issued before `cutoffMs` is denied; this one among them. */
  | { kind: 'cutoff'; cutoffMs: number }
  /** The session expired before its deny was written: nothing to deny. */
  | { kind: 'expired' };

/** How long one writer may hold a role's lock; checked and extended right before the IAM write. */
const LOCK_MS = 30_000;
/** How long a revocation waits for a busy role before failing (the queue retries it later): longer than a
 * lock can be held, so a holder that died costs its waiters a wait, not an attempt. */
const WAIT_MS = 35_000;
/** The role's state outlives the longest session (12 h) and the longest cut-off that matters (12 h). */
const STATE_TTL_MS = 25 * 3_600_000;

const roleNameOf = (roleArn: string) => roleArn.slice(roleArn.lastIndexOf('/') + 1);
const sessionField = (sessionId: string) => `s:${sessionId}`;

function sessionsOf(state: Record<string, string>): DeniedSession[] {
  return Object.entries(state).flatMap(([field, value]) => {
    if (!field.startsWith('s:')) return [];
    const [, notAfterMs, issuedAtMs] = value.split('|').map(Number);
    return [{ sessionId: field.slice(2), notAfterMs: notAfterMs ?? 0, issuedAtMs: issuedAtMs ?? 0 }];
  });
}

/**
 * The per-role deny list, shared by every worker replica through Redis. A revocation queues its session in
 * Redis, then whoever holds the role's lock writes every queued session to IAM in one read-modify-write; a
 * revocation whose session another writer already wrote does not write at all. So concurrent revocations on
 * one role never lose an update, and fifty of them cost a handful of IAM writes, not fifty.
 *
 * The role's state hash and its fields are described with the script that queues a session
 * (src/redis/scripts/queueSession-1.lua). Redis holds every session still to deny, so a stale read from IAM (it is eventually consistent) cannot
 * drop one: each write renders Redis's sessions together with whatever IAM already lists.
 */
export function createRoleDenyList(deps: {
  redis: RedisClient;
  keys: RedisKeys;
  iam: (target: RoleTarget) => RolePolicyStore;
}) {
  const { redis, keys } = deps;

  async function write(target: RoleTarget, token: string, nowMs: number): Promise<void> {
    const stateKey = keys.awsDenyState(target.policyName, target.roleArn);
    const lockKey = keys.awsDenyLock(target.policyName, target.roleArn);
    const iam = deps.iam(target);
    const roleName = roleNameOf(target.roleArn);
    const state = await redis.hgetall(stateKey);
    const appliedSeq = Number(state.seq ?? 0);
    const queued = sessionsOf(state);
    const current = parseDenyDocument(await iam.get(roleName, target.policyName));
    const known = new Set(queued.map((session) => session.sessionId));
    const merged: DenyDocument = {
      sessions: [...queued, ...current.sessions.filter((session) => !known.has(session.sessionId))],
      cutoffMs: Math.max(current.cutoffMs, Number(state.cutoffMs ?? 0)),
      foreign: current.foreign,
    };
    let next = prune(merged, nowMs);
    if (policySize(renderDenyDocument(next)) > target.maxChars) next = cutOffAll(next, nowMs);
    const put = async (document: DenyDocument) => {
      // Nothing left to deny (every queued session expired meanwhile): IAM refuses an empty policy anyway.
      if (document.sessions.length === 0 && document.cutoffMs === 0 && document.foreign.length === 0) return;
      const text = renderDenyDocument(document);
      if (policySize(text) > target.maxChars)
        throw new Error(
          `policy ${target.policyName} on ${roleName} cannot fit even a cut-off: its other statements take ${policySize(text)} characters`,
        );
      if (!(await runScript(redis, 'holdLock', [lockKey], [token, LOCK_MS])))
        throw new Error(`lost the deny-list lock of ${roleName} before writing; retrying`);
      try {
        await iam.put(roleName, target.policyName, text);
      } catch (error) {
        // A put that failed on our side may still land at IAM later, over a newer write: rewrite after it.
        await redis.hincrby(stateKey, 'lost', 1);
        throw error;
      }
    };
    try {
      await put(next);
    } catch (error) {
      // IAM counts every inline policy of the role against one limit; ours may not be the only one.
      if (!(error instanceof PolicyTooLargeError) || next.sessions.length === 0) throw error;
      next = cutOffAll(next, nowMs);
      await put(next);
    }
    const kept = new Set(next.sessions.map((session) => session.sessionId));
    const dropped = queued
      .filter((session) => !kept.has(session.sessionId))
      .map((s) => sessionField(s.sessionId));
    // 'lost' marks the role for a rewrite, which the caller's loop (or any waiter's) does next.
    await runScript(
      redis,
      'commitWrite',
      [stateKey, lockKey],
      [token, appliedSeq, next.cutoffMs, STATE_TTL_MS, Number(state.lost ?? 0), ...dropped],
    );
  }

  return {
    /**
     * Denies one session of the role and resolves once IAM holds the deny (or a cut-off that covers it).
     * Throws when IAM or Redis fails or the role stays busy; the caller retries, and retrying is safe.
     */
    async deny(target: RoleTarget, session: DeniedSession, nowMs: () => number): Promise<DenyOutcome> {
      const stateKey = keys.awsDenyState(target.policyName, target.roleArn);
      const lockKey = keys.awsDenyLock(target.policyName, target.roleArn);
      const field = sessionField(session.sessionId);
      const [status, value] = (await runScript(
        redis,
        'queueSession',
        [stateKey],
        [field, session.notAfterMs, session.issuedAtMs, STATE_TTL_MS],
      )) as [string, string];
      if (status === 'covered') return { kind: 'cutoff', cutoffMs: Number(value) };
      const seq = Number(value);
      const deadline = Date.now() + WAIT_MS;
      for (;;) {
        const [applied, cutoffMs, entry, lost, cleanAt] = await redis.hmget(
          stateKey,
          'applied',
          'cutoffMs',
          field,
          'lost',
          'cleanAt',
        );
        if (Number(applied ?? 0) >= seq && Number(cleanAt ?? 0) >= Number(lost ?? 0)) {
          const cutoff = Number(cutoffMs ?? 0);
          if (entry) return { kind: 'listed' };
          if (cutoff > session.issuedAtMs) return { kind: 'cutoff', cutoffMs: cutoff };
          return { kind: 'expired' };
        }
        // Checked on every round, so neither a busy role nor writes that keep losing their lock spin forever.
        if (Date.now() > deadline)
          throw new Error(
            `the deny list of ${roleNameOf(target.roleArn)} stayed busy for ${WAIT_MS / 1000} s`,
          );
        const token = randomBytes(16).toString('hex');
        if ((await redis.set(lockKey, token, 'PX', LOCK_MS, 'NX')) === 'OK') {
          try {
            await write(target, token, nowMs());
          } finally {
            // A release that fails (Redis gone) must not hide why the write failed; the lock lapses anyway.
            await runScript(redis, 'releaseLock', [lockKey], [token]).catch(() => undefined);
          }
          continue;
        }
        await sleep(20 + Math.random() * 60);
      }
    },
  };
}

export type RoleDenyList = ReturnType<typeof createRoleDenyList>;
