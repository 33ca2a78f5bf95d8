import type { AssumeRoleCommandInput, AssumeRoleCommandOutput } from '@aws-sdk/client-sts';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RedisClient } from '../../redis/connection';
import {
  DEFAULT_REVOCATION_POLICY_NAME,
  IAM_INLINE_POLICY_MAX_CHARS,
  STS_MIN_SECONDS,
  type AwsStsGrantConfig,
  type Config,
} from '../../config/schema';
import { BrokerError } from '../../domain/errors';
import type { Identity, Lease, Task } from '../../domain/types';
import type { RedisKeys } from '../../redis/keys';
import type { CredentialProvider, MintRequest } from '../provider';
import type { AwsClients } from './aws-clients';
import { createRoleDenyList, type DenyOutcome } from './role-deny-list';
import { roleSessionName, sourceIdentity, tagValue } from './naming';
import { renderSessionPolicy } from './session-policy';

/** A session this close to its own expiry is waited out rather than denied: the deny could not land sooner. */
const EXPIRY_WAIT_MS = 3_000;

/** STS errors that say the broker is not allowed or not set up to mint; everything else is an outage. */
const REFUSALS = new Set([
  'AccessDenied',
  'AccessDeniedException',
  'MalformedPolicyDocument',
  'MalformedPolicyDocumentException',
  'RegionDisabledException',
  'ExpiredTokenException',
  'ValidationError',
  'InvalidClientTokenId',
  'UnrecognizedClientException',
]);

const iso = (ms: number) => new Date(ms).toISOString();
const accountOf = (roleArn: string) => roleArn.split(':')[4] ?? '';

function placeholderValues(task: Task, identity: Identity) {
  const taskFields: Record<string, string> = { id: task.id, ticket: task.ticket, ref: task.ref };
  return (namespace: 'task' | 'identity', path: string): string | undefined => {
    if (namespace === 'task') return taskFields[path];
    if (path === 'subject') return identity.subject;
    if (path === 'issuer') return identity.issuer;
    return identity.claims[path.slice('claims.'.length)];
  };
}

function mintError(error: unknown): BrokerError {
  const name = (error as Error).name;
  const options = { detail: `${name}: ${(error as Error).message}`, cause: error };
  if (name === 'PackedPolicyTooLargeException' || name === 'PackedPolicyTooLarge')
    return new BrokerError(
      'session_policy_too_large',
      'STS refused the session policy and tags as too large once packed; shorten the policy or the task fields',
      options,
    );
  if (REFUSALS.has(name))
    return new BrokerError(
      'backend_refused',
      'AWS STS refused to issue the session; nothing was issued',
      options,
    );
  return new BrokerError(
    'unavailable',
    'a backend the broker needs is unavailable; nothing was issued',
    options,
  );
}

/** The AssumeRole call for one lease: names, tags and policy derived from it, the task and the identity. */
function assumeRoleInput(request: MintRequest, grant: AwsStsGrantConfig): AssumeRoleCommandInput {
  const { leaseId, identity, task, issuedAtMs, expiresAtMs } = request;
  const leaseSeconds = Math.ceil((expiresAtMs - issuedAtMs) / 1000);
  const tags = [
    { Key: 'task', Value: tagValue(task.id) },
    { Key: 'lease', Value: tagValue(leaseId) },
    ...(task.ticket ? [{ Key: 'ticket', Value: tagValue(task.ticket) }] : []),
  ];
  return {
    RoleArn: grant.roleArn,
    RoleSessionName: roleSessionName(leaseId),
    DurationSeconds: Math.min(Math.max(STS_MIN_SECONDS, leaseSeconds), grant.maxTtlSeconds),
    Policy: grant.sessionPolicy
      ? renderSessionPolicy(grant.sessionPolicy, placeholderValues(task, identity))
      : undefined,
    PolicyArns: grant.policyArns.length ? grant.policyArns.map((arn) => ({ arn })) : undefined,
    ExternalId: grant.externalId,
    SourceIdentity: sourceIdentity(identity.subject),
    Tags: tags,
  };
}

function describeDeny(outcome: DenyOutcome, handle: Record<string, string>, policyName: string) {
  const { roleArn, sessionId } = handle;
  const notAfter = iso(Number(handle.notAfterMs));
  switch (outcome.kind) {
    case 'listed':
      return {
        revocation: 'deny-applied',
        detail:
          `explicit deny for session ${sessionId} written to inline policy ${policyName} of ${roleArn}; IAM applies ` +
          `it within seconds (eventual consistency); the keys stay valid until ${notAfter}, every call they make denied`,
      };
    case 'cutoff':
      return {
        revocation: 'deny-applied-role-cutoff',
        detail:
          `the deny list of ${roleArn} was full: every session of the role issued before ${iso(outcome.cutoffMs)} ` +
          `is denied (inline policy ${policyName}), this one and any other live session of the role among them; ` +
          `IAM applies it within seconds`,
      };
    case 'expired':
      return { revocation: 'expired-at-source', detail: `the session expired at STS at ${notAfter}` };
  }
}

/**
 * AWS STS sessions. Minting is AssumeRole with a session policy rendered for the task, session tags and a
 * source identity. STS cannot revoke a session; the broker does the next best thing and says so: an
 * explicit deny for exactly that session in an inline policy of the role (see role-deny-list.ts).
 */
export function createAwsStsProvider(deps: {
  config: Pick<Config, 'grants'>;
  redis: RedisClient;
  keys: RedisKeys;
  clients: AwsClients;
}): CredentialProvider {
  const { config, clients } = deps;
  const denyList = createRoleDenyList({
    redis: deps.redis,
    keys: deps.keys,
    iam: (target) => clients.rolePolicies(target.where),
  });

  /** Revocation writes to IAM in the broker's own account: a session it could not deny is never issued. */
  async function assertRevocable(grant: AwsStsGrantConfig): Promise<void> {
    const account = await clients.callerAccount(grant).catch((error: unknown) => {
      throw mintError(error);
    });
    if (account !== accountOf(grant.roleArn))
      throw new BrokerError('backend_refused', 'AWS STS refused to issue the session; nothing was issued', {
        detail: `role ${grant.roleArn} is not in the broker's account ${account}: its sessions could not be revoked`,
      });
  }

  async function revoke(lease: Lease, nowMs: number) {
    const { handle } = lease;
    const notAfterMs = Number(handle.notAfterMs);
    if (!handle.roleArn || !handle.sessionId || !Number.isFinite(notAfterMs))
      throw new Error(`lease ${lease.id} has no STS session on record`);
    const remainingMs = notAfterMs - nowMs;
    if (remainingMs <= EXPIRY_WAIT_MS) {
      if (remainingMs > 0) await sleep(remainingMs + 50);
      return describeDeny({ kind: 'expired' }, handle, '');
    }
    const configured = config.grants[lease.grant];
    const grant: Partial<AwsStsGrantConfig> = configured?.provider === 'aws-sts' ? configured : {};
    const policyName = handle.policyName || grant.revocationPolicyName || DEFAULT_REVOCATION_POLICY_NAME;
    const target = {
      roleArn: handle.roleArn,
      policyName,
      maxChars: grant.revocationPolicyMaxChars ?? IAM_INLINE_POLICY_MAX_CHARS,
      where: { region: grant.region ?? 'us-east-1', iamEndpoint: grant.iamEndpoint },
    };
    const startedMs = Date.now();
    const session = { sessionId: handle.sessionId, notAfterMs, issuedAtMs: Number(handle.issuedAtMs) || 0 };
    const outcome = await denyList.deny(target, session, () => nowMs + (Date.now() - startedMs));
    return describeDeny(outcome, handle, policyName);
  }

  return {
    kind: 'aws-sts',
    revocationSemantics:
      'An STS session cannot be revoked. The broker writes an explicit deny for that one session into an inline ' +
      'policy of the role; IAM applies it within seconds, and the keys stay valid (every call denied) until ' +
      'their expiry. When the role’s deny list is full, every older session of the role is cut by time instead.',

    async mint(request) {
      const { grant, issuedAtMs } = request;
      if (grant.provider !== 'aws-sts') throw new Error('aws-sts provider given another grant');
      const input = assumeRoleInput(request, grant);
      await assertRevocable(grant);
      let answer: AssumeRoleCommandOutput;
      try {
        answer = await clients.assumeRole(grant, input);
      } catch (error) {
        throw mintError(error);
      }
      const { Credentials: credentials, AssumedRoleUser: user } = answer;
      if (
        !credentials?.AccessKeyId ||
        !credentials.SecretAccessKey ||
        !credentials.SessionToken ||
        !user?.AssumedRoleId
      )
        throw new BrokerError(
          'unavailable',
          'a backend the broker needs is unavailable; nothing was issued',
          {
            detail: 'AssumeRole answered without credentials',
          },
        );
      const durationMs = (input.DurationSeconds ?? STS_MIN_SECONDS) * 1000;
      const notAfterMs = credentials.Expiration?.getTime() ?? issuedAtMs + durationMs;
      return {
        credential: {
          accessKeyId: credentials.AccessKeyId,
          secretAccessKey: credentials.SecretAccessKey,
          sessionToken: credentials.SessionToken,
          expiration: iso(notAfterMs),
        },
        secret: credentials.SessionToken,
        handle: {
          roleArn: grant.roleArn,
          sessionId: user.AssumedRoleId,
          sessionArn: user.Arn ?? '',
          // Not a secret (CloudTrail logs it on every call): it ties CloudTrail events to this lease.
          accessKeyId: credentials.AccessKeyId,
          // STS's own clock: the session was issued its duration before it expires.
          issuedAtMs: String(notAfterMs - durationMs),
          notAfterMs: String(notAfterMs),
          policyName: grant.revocationPolicyName,
        },
        notAfterMs,
      };
    },

    // Also for a session never returned (its lease was refused or not written): its keys existed, valid for
    // the session's life, in the broker's memory at least. The deny is pruned once the session has expired.
    revoke: (lease, { nowMs }) => revoke(lease, nowMs),
  };
}
