import { createHash } from 'node:crypto';
import type { IssuerConfig } from '../config/schema';
import type { Identity, IssuerKind } from '../domain/types';

/**
 * The claims that name one CI job (or pod) as its platform signs them. A GitHub token names the run, the
 * attempt and the workflow; only a token carrying `check_run_id` (see OPTIONAL_JOB_CLAIMS) names the job
 * itself. SPIFFE and generic OIDC tokens name no job at all: there the token itself is the job.
 */
const DEFAULT_JOB_CLAIMS: Readonly<Record<IssuerKind, readonly string[]>> = {
  'github-actions': ['repository', 'run_id', 'run_attempt', 'job_workflow_ref'],
  gitlab: ['project_path', 'pipeline_id', 'job_id'],
  kubernetes: ['kubernetes.io.namespace', 'kubernetes.io.serviceaccount.name', 'kubernetes.io.pod.uid'],
  spiffe: [],
  oidc: [],
};

/**
 * Part of the key when the token carries them: every token of one job carries them or none does, so the key
 * stays stable. GitHub's `check_run_id` tells jobs of one run apart by a claim GitHub signs, not by a name
 * the client sends.
 */
const OPTIONAL_JOB_CLAIMS: Readonly<Partial<Record<IssuerKind, readonly string[]>>> = {
  'github-actions': ['check_run_id'],
};

/** Recorded on the task besides the key claims, so its record says which run it was. */
const RECORDED_CLAIMS: Readonly<Record<IssuerKind, readonly string[]>> = {
  'github-actions': ['workflow_ref', 'ref', 'sha', 'event_name', 'actor', 'environment'],
  gitlab: ['ref', 'sha', 'ci_config_ref_uri', 'user_login', 'environment'],
  kubernetes: ['kubernetes.io.pod.name', 'kubernetes.io.node.name'],
  spiffe: [],
  oidc: [],
};

export interface JobBinding {
  /** SHA-256 (hex) of the issuer and the job's signed claims: what every later call must match. */
  key: string;
  /** The task of this job (and `job` name, when the client gave one): deterministic, so exchanges meet. */
  taskId: string;
  /** Claims for the task record. */
  claims: Record<string, string>;
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

export const jobClaimsOf = (issuer: Pick<IssuerConfig, 'kind' | 'jobClaims'>): readonly string[] =>
  issuer.jobClaims ?? DEFAULT_JOB_CLAIMS[issuer.kind];

/**
 * The job key of a verified identity, from the signed claims only; null when a claim it needs is missing.
 * With no job claims (SPIFFE, OIDC), the token's own hash: only that token reaches its task.
 */
export function jobKeyOf(identity: Identity, jobClaims: readonly string[]): string | null {
  if (jobClaims.length === 0)
    return sha256(`tasklease-job\0${identity.issuer}\0token\0${identity.tokenSha256}`);
  if (jobClaims.some((claim) => !identity.claims[claim])) return null;
  const optional = (OPTIONAL_JOB_CLAIMS[identity.kind] ?? []).filter((claim) => identity.claims[claim]);
  const parts = [...jobClaims, ...optional].map((claim) => `${claim}=${identity.claims[claim]}`);
  return sha256(`tasklease-job\0${identity.issuer}\0${parts.join('\0')}`);
}

/** The job an exchanging token belongs to; `missing` lists the job claims the token lacks. */
export function bindJob(
  identity: Identity,
  issuer: Pick<IssuerConfig, 'kind' | 'jobClaims'>,
  jobName?: string,
): JobBinding | { missing: string[] } {
  const keyClaims = jobClaimsOf(issuer);
  const key = jobKeyOf(identity, keyClaims);
  if (!key) return { missing: keyClaims.filter((claim) => !identity.claims[claim]) };
  const claims: Record<string, string> = {};
  const optional = OPTIONAL_JOB_CLAIMS[issuer.kind] ?? [];
  for (const claim of [...keyClaims, ...optional, ...RECORDED_CLAIMS[issuer.kind]]) {
    const value = identity.claims[claim];
    if (value) claims[claim] = value;
  }
  if (jobName) claims.job = jobName;
  return { key, taskId: sha256(`${key}\0job=${jobName ?? ''}`).slice(0, 32), claims };
}
