import { randomUUID } from 'node:crypto';
import { roleSessionName, sourceIdentity, tagValue } from '../../src/providers/aws-sts/naming';

/** What STS accepts (AssumeRole API reference). */
const ROLE_SESSION_NAME = /^[\w+=,.@-]{2,64}$/;
const SOURCE_IDENTITY = /^[\w+=,.@-]{2,64}$/;
const TAG_VALUE = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;

/** A lease id as the broker makes one (broker-context.ts: a UUID without dashes). */
const leaseId = () => randomUUID().replaceAll('-', '');

describe('roleSessionName', () => {
  it('is tl-<lease id> for the ids the broker makes, within what STS accepts', () => {
    for (let i = 0; i < 20; i += 1) {
      const id = leaseId();
      const name = roleSessionName(id);
      expect(name).toBe(`tl-${id}`);
      expect(name).toMatch(ROLE_SESSION_NAME);
      expect(name.length).toBeLessThanOrEqual(64);
    }
  });

  it.each([
    ['a UUID with dashes', '0f8fad5b-d9cb-469f-a165-70867728950e'],
    ['characters STS refuses', 'lease/with:odd chars*?"'],
    ['non-ASCII', 'lease-ünïcødé'],
  ])('replaces what STS refuses: %s', (_label, id) => {
    expect(roleSessionName(id)).toMatch(ROLE_SESSION_NAME);
  });
});

describe('sourceIdentity', () => {
  const SUBJECTS: [string, string][] = [
    ['a GitHub Actions subject', 'repo:octo-org/octo-repo:ref:refs/heads/main'],
    ['a GitHub environment subject', 'repo:octo-org/octo-repo:environment:Production'],
    ['a GitLab subject', 'project_path:mygroup/myproject:ref_type:branch:ref:main'],
    ['a Kubernetes service account', 'system:serviceaccount:ns:sa'],
    ['a SPIFFE id', 'spiffe://example.org/ns/prod/sa/api'],
    ['a 300-character subject', `repo:${'o'.repeat(150)}/${'r'.repeat(140)}:ref:main`.slice(0, 300)],
    ['a 300-character valid subject', 'a'.repeat(300)],
    ['a 1-character subject', 'a'],
    ['a 1-character unsafe subject', ':'],
    ['an empty subject', ''],
    ['a subject starting with aws', 'awsome-service'],
    ['a subject starting with AWS:', 'AWS:lambda:fn'],
    ['a subject starting with aws: after sanitising', 'aws/role'],
    ['an e-mail subject', 'ci-bot@example.com'],
    ['a non-ASCII subject', 'ünïcødé-wörkload'],
  ];

  it.each(SUBJECTS)('is what STS accepts for %s', (_label, subject) => {
    const identity = sourceIdentity(subject);
    expect(identity).toMatch(SOURCE_IDENTITY);
    // STS reserves the aws: prefix; the broker keeps clear of "aws" altogether.
    expect(identity).not.toMatch(/^aws/i);
  });

  it.each(SUBJECTS)('is stable for %s', (_label, subject) => {
    expect(sourceIdentity(subject)).toBe(sourceIdentity(subject));
  });

  it.each([
    ['a plain name', 'deploy-bot'],
    ['an e-mail address', 'ci-bot@example.com'],
    ['every allowed punctuation', 'a+b=c,d.e@f-g_h'],
    ['64 characters', 'x'.repeat(64)],
    ['2 characters', 'ab'],
  ])('keeps a subject that is already valid unchanged: %s', (_label, subject) => {
    expect(sourceIdentity(subject)).toBe(subject);
  });

  it('keeps a readable prefix of a subject it had to change', () => {
    expect(sourceIdentity('repo:octo-org/octo-repo:ref:refs/heads/main')).toMatch(
      /^repo-octo-org-octo-repo-ref-refs-heads-main\./,
    );
  });

  it.each([
    ['a separator', 'a:b', 'a/b'],
    ['a Kubernetes namespace separator', 'system:serviceaccount:ns:sa', 'system:serviceaccount:ns/sa'],
    ['a changed subject and the same one already valid', 'repo:org/app', 'repo-org-app'],
    ['an aws subject and its x-aws form', 'aws-thing', 'x-aws-thing'],
    [
      'two long subjects differing after the cut',
      `repo:${'o'.repeat(100)}:ref:refs/heads/main`,
      `repo:${'o'.repeat(100)}:ref:refs/heads/dev`,
    ],
    ['two long valid subjects differing after the cut', `${'a'.repeat(100)}1`, `${'a'.repeat(100)}2`],
  ])('gives two subjects that sanitise alike different identities: %s', (_label, first, second) => {
    expect(sourceIdentity(first)).not.toBe(sourceIdentity(second));
  });

  // Regression: a subject that is literally another subject's sanitised form (`a-b.<hash>`) was once passed
  // through unchanged and so shared that subject's source identity.
  it('never gives a subject the identity another subject was mapped to', () => {
    const mapped = sourceIdentity('repo:octo-org/octo-repo:ref:refs/heads/main');
    expect(sourceIdentity(mapped)).not.toBe(mapped);
  });
});

describe('tagValue', () => {
  it.each([
    ['a lease id', leaseId()],
    ['a ticket', 'OPS-1234'],
    ['a ref', 'refs/heads/main'],
    ['letters, spaces and digits of any script', 'Ticket über 42 日本語 ٣'],
    ['every allowed punctuation', '_.:/=+-@'],
  ])('keeps %s that STS accepts as it is', (_label, value) => {
    expect(tagValue(value)).toBe(value);
    expect(tagValue(value)).toMatch(TAG_VALUE);
  });

  it.each([
    ['quotes and braces', '"}]{'],
    ['wildcards and variables', '*?${aws:username}'],
    ['control characters', 'a\nb\tc\u0000d'],
    ['shell and HTML', '<script>$(rm -rf /)</script>;|&'],
    ['emoji', 'ship it 🚀'],
  ])('replaces each character STS refuses in %s with one underscore', (_label, value) => {
    const tagged = tagValue(value);
    expect(tagged).toMatch(TAG_VALUE);
    expect([...tagged]).toHaveLength([...value].length);
  });

  it('keeps the letters of a ticket with odd characters in place', () => {
    expect(tagValue('OPS-1 "urgent"!')).toBe('OPS-1 _urgent__');
  });

  it('cuts a long value to 256 characters', () => {
    expect(tagValue('a'.repeat(300))).toBe('a'.repeat(256));
    expect(tagValue('*'.repeat(300))).toBe('_'.repeat(256));
  });

  // Regression: cutting at 256 UTF-16 code units once split a letter outside the BMP (CJK Extension B) in
  // half, leaving a lone surrogate that is neither in STS's character set nor valid UTF-8.
  it.each([
    ['at the limit', `${'a'.repeat(255)}𠀀𠀀`],
    ['throughout', '𠀀'.repeat(200)],
    ['after an odd number of units', `${'a'.repeat(1)}${'𝐀'.repeat(200)}`],
  ])('never cuts a letter outside the BMP in half: %s', (_label, value) => {
    const tagged = tagValue(value);
    expect(tagged).toMatch(TAG_VALUE);
    expect(tagged.length).toBeLessThanOrEqual(256);
    expect(value.startsWith(tagged)).toBe(true);
    expect(tagged.length).toBeGreaterThanOrEqual(255);
  });
});
