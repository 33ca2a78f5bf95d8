import {
  checkSessionPolicyTemplate,
  SESSION_POLICY_MAX_CHARS,
} from '../../src/config/session-policy-template';
import { renderSessionPolicy, type PlaceholderValues } from '../../src/providers/aws-sts/session-policy';
import { BrokerError } from '../../src/domain/errors';

/** A grant's template using every tasklease placeholder next to IAM's own policy variables. */
const TEMPLATE = {
  Version: '2012-10-17',
  Statement: [
    {
      Sid: 'TaskArtifacts',
      Effect: 'Allow',
      Action: ['s3:GetObject', 's3:PutObject'],
      Resource: 'arn:aws:s3:::artifacts/${task.ticket}/${task.id}/*',
    },
    {
      Sid: 'OwnBranch',
      Effect: 'Allow',
      Action: 'codecommit:GitPush',
      Resource: '*',
      Condition: {
        StringEquals: {
          'codecommit:References': '${task.ref}',
          'aws:PrincipalTag/subject': '${identity.subject}',
          'aws:PrincipalTag/issuer': '${identity.issuer}',
          'aws:PrincipalTag/repo': '${identity.claims.repository}',
        },
        StringLike: { 's3:prefix': 'home/${aws:username}/*' },
      },
    },
  ],
};

interface Request {
  task: Record<string, string | undefined>;
  identity: { subject: string; issuer: string; claims: Record<string, string> };
}

const REQUEST: Request = {
  task: { id: '7f3c2a9e4b1d4c6f8a0e1d2c3b4a5f60', ticket: 'OPS-1234', ref: 'refs/heads/main' },
  identity: {
    subject: 'repo:octo-org/octo-repo:ref:refs/heads/main',
    issuer: 'https://token.actions.githubusercontent.com',
    claims: { repository: 'octo-org/octo-repo', 'job.workflow': 'deploy.yml' },
  },
};

/** Looks values up the way the provider does: task fields and the identity's subject, issuer and claims. */
function valuesOf(request: Request): PlaceholderValues {
  return (namespace, path) => {
    if (namespace === 'task') return request.task[path];
    if (path === 'subject') return request.identity.subject;
    if (path === 'issuer') return request.identity.issuer;
    if (path.startsWith('claims.')) return request.identity.claims[path.slice('claims.'.length)];
    return undefined;
  };
}

const withTask = (task: Request['task']): Request => ({ ...REQUEST, task: { ...REQUEST.task, ...task } });

/** The BrokerError code a render throws, or 'rendered' when it does not throw. */
function renderCode(template: Record<string, unknown>, request: Request): string {
  try {
    renderSessionPolicy(template, valuesOf(request));
    return 'rendered';
  } catch (error) {
    if (error instanceof BrokerError) return error.code;
    throw error;
  }
}

/** Every string value of a JSON tree, keys excluded, in document order. */
const stringValues = (value: unknown): string[] =>
  typeof value === 'string'
    ? [value]
    : Array.isArray(value)
      ? value.flatMap(stringValues)
      : value && typeof value === 'object'
        ? Object.values(value).flatMap(stringValues)
        : [];

/** The tree with every string replaced by a marker: equal shapes mean equal structure. */
const shape = (value: unknown): unknown =>
  typeof value === 'string'
    ? 's'
    : Array.isArray(value)
      ? value.map(shape)
      : value && typeof value === 'object'
        ? Object.fromEntries(Object.entries(value).map(([key, child]) => [key, shape(child)]))
        : value;

describe('renderSessionPolicy', () => {
  it('fills every tasklease placeholder with the request value', () => {
    const policy = JSON.parse(renderSessionPolicy(TEMPLATE, valuesOf(REQUEST)));
    expect(policy.Statement[0].Resource).toBe(
      'arn:aws:s3:::artifacts/OPS-1234/7f3c2a9e4b1d4c6f8a0e1d2c3b4a5f60/*',
    );
    expect(policy.Statement[1].Condition.StringEquals).toEqual({
      'codecommit:References': 'refs/heads/main',
      'aws:PrincipalTag/subject': 'repo:octo-org/octo-repo:ref:refs/heads/main',
      'aws:PrincipalTag/issuer': 'https://token.actions.githubusercontent.com',
      'aws:PrincipalTag/repo': 'octo-org/octo-repo',
    });
    expect(stringValues(policy).join('\n')).not.toMatch(/\$\{(task|identity)\./);
  });

  it('fills a claim whose name holds dots', () => {
    const template = {
      ...TEMPLATE,
      Statement: [{ ...TEMPLATE.Statement[0], Sid: '${identity.claims.job.workflow}' }],
    };
    expect(JSON.parse(renderSessionPolicy(template, valuesOf(REQUEST))).Statement[0].Sid).toBe('deploy.yml');
  });

  it("leaves IAM's own policy variables for IAM to resolve", () => {
    const template = {
      Version: '2012-10-17',
      Statement: [
        {
          Effect: 'Allow',
          Action: 's3:*',
          Resource: [
            'arn:aws:s3:::home/${aws:username}/*',
            'arn:aws:s3:::tags/${aws:PrincipalTag/team}/${task.id}',
            'arn:aws:s3:::lit/${*}/${?}/${$}',
          ],
        },
      ],
    };
    expect(JSON.parse(renderSessionPolicy(template, valuesOf(REQUEST))).Statement[0].Resource).toEqual([
      'arn:aws:s3:::home/${aws:username}/*',
      'arn:aws:s3:::tags/${aws:PrincipalTag/team}/7f3c2a9e4b1d4c6f8a0e1d2c3b4a5f60',
      'arn:aws:s3:::lit/${*}/${?}/${$}',
    ]);
  });

  it('does not touch keys or non-string values', () => {
    const template = {
      Version: '2012-10-17',
      Statement: [
        {
          Effect: 'Allow',
          Action: 's3:GetObject',
          Resource: '*',
          Condition: { NumericLessThan: { 's3:max-keys': 10 }, Bool: { 'aws:SecureTransport': true } },
        },
      ],
    };
    expect(JSON.parse(renderSessionPolicy(template, valuesOf(REQUEST)))).toEqual(template);
  });

  describe('refuses a value that could change the policy (placeholder_rejected)', () => {
    const INJECTIONS: [string, string][] = [
      ['a double quote', 'OPS-1"'],
      ['a string break-out', 'OPS-1"}]'],
      ['a full statement smuggled in', 'x"},{"Effect":"Allow","Action":"*","Resource":"*'],
      ['an opening brace', 'OPS{1'],
      ['a closing brace', 'OPS}1'],
      ['a wildcard *', 'OPS-*'],
      ['a wildcard ?', 'OPS-?'],
      ['a dollar (an IAM variable)', '${aws:username}'],
      ['a bare dollar', 'OPS$1'],
      ['a newline', 'OPS-1\nOPS-2'],
      ['a carriage return', 'OPS-1\r'],
      ['a tab', 'OPS\t1'],
      ['a space', 'OPS 1'],
      ['a backslash', 'OPS\\u0022'],
      ['a comma', 'OPS-1,OPS-2'],
      ['a non-ASCII letter', 'OPS-ä'],
      ['257 characters', 'a'.repeat(257)],
      ['an empty value', ''],
    ];

    it.each(INJECTIONS)('in task.ticket: %s', (_label, ticket) => {
      expect(renderCode(TEMPLATE, withTask({ ticket }))).toBe('placeholder_rejected');
    });

    it.each(INJECTIONS)('in a claim: %s', (_label, repository) => {
      const request = { ...REQUEST, identity: { ...REQUEST.identity, claims: { repository } } };
      expect(renderCode(TEMPLATE, request)).toBe('placeholder_rejected');
    });

    it('a missing claim', () => {
      const request = { ...REQUEST, identity: { ...REQUEST.identity, claims: {} } };
      expect(renderCode(TEMPLATE, request)).toBe('placeholder_rejected');
    });

    it.each(['__proto__', 'constructor', 'toString', 'hasOwnProperty'])(
      'a claim named like a built-in object property (%s) the token does not carry',
      (name) => {
        const template = {
          ...TEMPLATE,
          Statement: [{ ...TEMPLATE.Statement[0], Sid: `\${identity.claims.${name}}` }],
        };
        expect(checkSessionPolicyTemplate(template)).toEqual([]);
        expect(renderCode(template, REQUEST)).toBe('placeholder_rejected');
      },
    );

    it('a missing task field (a task declared without a ticket)', () => {
      expect(renderCode(TEMPLATE, withTask({ ticket: undefined }))).toBe('placeholder_rejected');
    });

    it('an unknown placeholder the config check would have caught', () => {
      const template = { ...TEMPLATE, Statement: [{ ...TEMPLATE.Statement[0], Sid: '${task.owner}' }] };
      expect(renderCode(template, REQUEST)).toBe('placeholder_rejected');
    });

    it('as a 400 whose message may be shown and does not echo the value', () => {
      const secretish = 'x"}]' + 'q'.repeat(20);
      let thrown: unknown;
      try {
        renderSessionPolicy(TEMPLATE, valuesOf(withTask({ ticket: secretish })));
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(BrokerError);
      expect(thrown).toMatchObject({ code: 'placeholder_rejected', status: 400, expose: true });
      expect((thrown as Error).message).toContain('${task.ticket}');
      expect((thrown as Error).message).not.toContain(secretish);
    });
  });

  it('accepts the longest safe value, 256 characters, and every allowed punctuation', () => {
    const template = {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: '${task.ref}', Resource: '*' }],
    };
    expect(renderCode(template, withTask({ ref: 'a'.repeat(256) }))).toBe('rendered');
    expect(renderCode(template, withTask({ ref: 'Az09_.:/=+@-' }))).toBe('rendered');
  });

  it('refuses a rendered policy over 2048 characters (session_policy_too_large)', () => {
    // Eight placeholders of at most 256 characters each: statically small, too large once filled.
    const template = {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: Array(8).fill('${task.ref}') }],
    };
    expect(checkSessionPolicyTemplate(template)).toEqual([]);
    expect(renderCode(template, withTask({ ref: 'r'.repeat(200) }))).toBe('rendered');
    let thrown: unknown;
    try {
      renderSessionPolicy(template, valuesOf(withTask({ ref: 'r'.repeat(256) })));
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ code: 'session_policy_too_large', status: 400 });
  });

  it('accepts a rendered policy of exactly 2048 characters and refuses one more', () => {
    const template = (sid: string) => ({
      Version: '2012-10-17',
      Statement: [{ Sid: sid, Effect: 'Allow', Action: '*', Resource: Array(7).fill('${task.ref}') }],
    });
    const request = withTask({ ref: 'p'.repeat(256) });
    const sizeWith = (sid: string) => renderSessionPolicy(template(sid), valuesOf(request)).length;
    const sid = 'S'.repeat(1 + SESSION_POLICY_MAX_CHARS - sizeWith('S'));
    expect(sizeWith(sid)).toBe(SESSION_POLICY_MAX_CHARS);
    expect(renderCode(template(`${sid}S`), request)).toBe('session_policy_too_large');
  });

  it.each([
    ['the GitHub request', REQUEST],
    ['values with every allowed punctuation', withTask({ ticket: 'a_b.c:d/e=f+g@h-i', ref: '/=+@' })],
  ])('always renders valid JSON with the structure of the template: %s', (_label, request) => {
    const text = renderSessionPolicy(TEMPLATE, valuesOf(request));
    const policy = JSON.parse(text);
    expect(policy.Statement).toHaveLength(TEMPLATE.Statement.length);
    expect(shape(policy)).toEqual(shape(TEMPLATE));
  });
});

describe('checkSessionPolicyTemplate', () => {
  const statement = { Effect: 'Allow', Action: 's3:GetObject', Resource: 'arn:aws:s3:::a/${task.id}/*' };

  it('accepts a good template', () => {
    expect(checkSessionPolicyTemplate(TEMPLATE)).toEqual([]);
    expect(checkSessionPolicyTemplate({ Version: '2012-10-17', Statement: [statement] })).toEqual([]);
  });

  it.each([
    ['an unknown task field', '${task.owner}', /unknown placeholder \$\{task\.owner\}/],
    ['an unknown namespace path', '${identity.email}', /unknown placeholder \$\{identity\.email\}/],
    ['a claim without a name', '${identity.claims.}', /unknown placeholder/],
    ['a claim with a forbidden character', '${identity.claims.a b}', /unknown placeholder/],
  ])('reports %s', (_label, placeholder, problem) => {
    const problems = checkSessionPolicyTemplate({
      Version: '2012-10-17',
      Statement: [{ ...statement, Resource: `arn:aws:s3:::a/${placeholder}` }],
    });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(problem);
  });

  it('reports a placeholder in a key', () => {
    const problems = checkSessionPolicyTemplate({
      Version: '2012-10-17',
      Statement: [
        { ...statement, Condition: { StringEquals: { 'aws:PrincipalTag/${task.ticket}': 'yes' } } },
      ],
    });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/\$\{task\.ticket\} may only appear in a value/);
  });

  it.each([
    ['a missing Version', { Statement: [statement] }],
    ['an old Version', { Version: '2008-10-17', Statement: [statement] }],
  ])('reports %s', (_label, template) => {
    expect(checkSessionPolicyTemplate(template)).toEqual([expect.stringMatching(/Version/)]);
  });

  it.each([
    ['an empty Statement', { Version: '2012-10-17', Statement: [] }],
    ['no Statement', { Version: '2012-10-17' }],
    ['a Statement that is not a list', { Version: '2012-10-17', Statement: 'Allow' }],
  ])('reports %s', (_label, template) => {
    expect(checkSessionPolicyTemplate(template)).toEqual([expect.stringMatching(/Statement/)]);
  });

  it('reports a template over 2048 characters before any value is filled', () => {
    const resources = Array.from({ length: 60 }, (_, i) => `arn:aws:s3:::bucket-${i}/prefix/*`);
    const template = {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: '*', Resource: resources }],
    };
    expect(JSON.stringify(template).length).toBeGreaterThan(SESSION_POLICY_MAX_CHARS);
    expect(checkSessionPolicyTemplate(template)).toEqual([expect.stringMatching(/characters.*2048/)]);
  });

  it('counts the static size without the placeholders themselves', () => {
    // Long placeholder names alone push the raw text over the limit; what is left once they are out fits.
    const placeholders = Array(120).fill('${identity.claims.a_rather_long_claim_name}');
    const template = {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: '*', Resource: placeholders }],
    };
    expect(JSON.stringify(template).length).toBeGreaterThan(SESSION_POLICY_MAX_CHARS);
    expect(checkSessionPolicyTemplate(template)).toEqual([]);
  });
});
