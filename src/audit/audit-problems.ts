/** What `audit verify` finds wrong, by kind (verify-audit.ts; docs/architecture.md tables each). */
export type AuditProblemKind =
  | 'bad-seal'
  | 'seal-gap'
  | 'truncated-start'
  | 'truncated-end'
  | 'changed'
  | 'removed'
  | 'reordered'
  | 'unsealed'
  | 'foreign'
  | 'malformed';

export interface AuditProblem {
  kind: AuditProblemKind;
  message: string;
  /** Event ids (or a seal's id) concerned, when known. */
  ids?: string[];
}
