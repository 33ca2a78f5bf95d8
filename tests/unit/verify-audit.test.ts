import { buildSeal, GENESIS_CHAIN, signSeal } from '../../src/audit/audit-chain';
import type { RawAuditEntry, StoredSeal } from '../../src/audit/audit-log';
import { verifyAudit } from '../../src/audit/verify-audit';
import { generateSigningJwks, loadSigningKeys } from '../../src/signing/signing-keys';

/** Seals built and signed as the sealer does, then the log altered in each way a tamperer could. */
describe('verifyAudit', () => {
  const entries: RawAuditEntry[] = Array.from({ length: 9 }, (_, i) => ({
    id: `1700000000000-${i}`,
    json: JSON.stringify({ type: 'credential.issued', atMs: 1700000000000 + i, lease: `lease-${i}` }),
  }));
  let seals: StoredSeal[];
  let jwks: { keys: object[] };

  beforeAll(async () => {
    const keys = await loadSigningKeys(JSON.stringify(await generateSigningJwks()));
    jwks = keys.jwks;
    seals = [];
    let previous = { lastSeq: 0, hash: GENESIS_CHAIN };
    for (const batch of [entries.slice(0, 4), entries.slice(4, 9)]) {
      const seal = buildSeal(previous, batch, 1700000001000);
      seals.push({ id: seal.lastId, jws: await signSeal(keys, 'tasklease', seal) });
      previous = seal;
    }
  });

  const verify = (input: { entries?: RawAuditEntry[]; seals?: StoredSeal[]; mode?: 'full' | 'partial' }) =>
    verifyAudit({
      entries: input.entries ?? entries,
      seals: input.seals ?? seals,
      jwks,
      mode: input.mode ?? 'full',
    });
  const kinds = async (input: Parameters<typeof verify>[0]) =>
    (await verify(input)).problems.map((problem) => problem.kind);
  const edit = (index: number, json: string) =>
    entries.map((entry, i) => (i === index ? { ...entry, json } : entry));

  it('passes an untouched log and reports its head', async () => {
    const result = await verify({});
    expect(result).toMatchObject({ ok: true, verifiedEvents: 9, seals: 2, unsealed: 0 });
    expect(result.head).toMatchObject({ seq: 9, id: '1700000000000-8' });
  });

  type Input = Parameters<typeof verify>[0];
  const swapContents = () =>
    entries.map((e, i) =>
      i === 1 ? { ...e, json: entries[2]!.json } : i === 2 ? { ...e, json: entries[1]!.json } : e,
    );
  const cases: [string, () => Input, string[]][] = [
    ['an edited event', () => ({ entries: edit(2, '{"type":"credential.denied"}') }), ['changed']],
    ['a removed event', () => ({ entries: entries.filter((_, i) => i !== 5) }), ['removed']],
    [
      'an inserted event',
      () => ({
        entries: [...entries.slice(0, 3), { id: '1700000000000-2', json: '{}' }, ...entries.slice(3)],
      }),
      ['reordered', 'changed'],
    ],
    ['swapped contents', () => ({ entries: swapContents() }), ['reordered']],
    [
      'swapped lines',
      () => ({ entries: [entries[0]!, entries[2]!, entries[1]!, ...entries.slice(3)] }),
      ['reordered'],
    ],
    ['a removed first seal', () => ({ seals: seals.slice(1) }), ['truncated-start', 'changed']],
    [
      'a seal stored under another id',
      () => ({ seals: [{ ...seals[0]!, id: '1700000000000-5' }, seals[1]!] }),
      ['bad-seal', 'truncated-start'],
    ],
  ];
  it.each(cases)('fails on %s', async (_name, input, expected) => {
    const found = await kinds(input());
    expect(found.length).toBeGreaterThan(0);
    for (const kind of expected) expect(found).toContain(kind);
  });

  it('refuses a seal signed by another key', async () => {
    const other = await loadSigningKeys(JSON.stringify(await generateSigningJwks()));
    const seal = buildSeal({ lastSeq: 0, hash: GENESIS_CHAIN }, entries.slice(0, 4), 1700000001000);
    const forged = { id: seal.lastId, jws: await signSeal(other, 'tasklease', seal) };
    expect(await kinds({ seals: [forged, seals[1]!] })).toContain('bad-seal');
  });

  it('counts events after the newest seal as unsealed, not as a problem', async () => {
    const extra = { id: '1700000000001-0', json: '{"type":"task.completed"}' };
    expect(await verify({ entries: [...entries, extra] })).toMatchObject({ ok: true, unsealed: 1 });
  });

  it('checks an export of some events one by one against their seals', async () => {
    const some = [entries[1]!, entries[6]!];
    expect(await verify({ entries: some, mode: 'partial' })).toMatchObject({ ok: true, verifiedEvents: 2 });
    const edited = [{ ...entries[1]!, json: '{"type":"x"}' }, entries[6]!];
    expect(await kinds({ entries: edited, mode: 'partial' })).toEqual(['changed']);
    expect(await kinds({ entries: some, seals: [seals[0]!], mode: 'partial' })).toEqual(['unsealed']);
  });
});
