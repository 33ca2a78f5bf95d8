import { appendFileSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildSeal, GENESIS_CHAIN, signSeal } from '../../src/audit/audit-chain';
import { startAuditFileSink } from '../../src/audit/audit-file-sink';
import { auditLines, eventLine, headerLine, sealLine } from '../../src/audit/audit-lines';
import type { RawAuditEntry, StoredSeal } from '../../src/audit/audit-log';
import { compareStreamIds } from '../../src/audit/stream-ids';
import { loadSigningKeys, generateSigningJwks, type SigningKeyRing } from '../../src/signing/signing-keys';
import { tempDir } from '../support/fixtures';

const ISSUER = 'https://broker.example';
const NOW_MS = 1700000005000;
const MIB = 1 << 20;
const HEADER = `${headerLine({ broker: ISSUER, createdAt: new Date(NOW_MS).toISOString() })}\n`;

let keys: SigningKeyRing;
beforeAll(async () => {
  keys = await loadSigningKeys(JSON.stringify(await generateSigningJwks()));
});

/** The audit log in Redis as the sink sees it: events and seals built and signed as the sealer does. */
function fakeLog() {
  const entries: RawAuditEntry[] = [];
  const seals: StoredSeal[] = [];
  let head = { lastSeq: 0, hash: GENESIS_CHAIN };
  let nextSeq = 0;
  const log = {
    entries,
    seals,
    /** Changes what `entriesBetween` answers for a seal (a tamperer, a Redis error). */
    answer: (_lastId: string, found: RawAuditEntry[]): RawAuditEntry[] => found,
    async seal(events: object[], previous = head) {
      const batch = events.map((event) => ({
        id: `1700000000000-${nextSeq++}`,
        json: JSON.stringify(event),
      }));
      entries.push(...batch);
      const payload = buildSeal('tl:', previous, batch, NOW_MS);
      seals.push({ id: payload.lastId, jws: await signSeal(keys, ISSUER, payload) });
      head = payload;
    },
    audit: {
      seals: async (afterId: string | undefined, limit: number) =>
        seals.filter((seal) => !afterId || compareStreamIds(seal.id, afterId) > 0).slice(0, limit),
      entriesBetween: async (firstId: string, lastId: string) =>
        log.answer(
          lastId,
          entries.filter((e) => compareStreamIds(e.id, firstId) >= 0 && compareStreamIds(e.id, lastId) <= 0),
        ),
      entries: async (afterId: string | undefined, limit: number) =>
        entries.filter((e) => !afterId || compareStreamIds(e.id, afterId) > 0).slice(0, limit),
      newestSeal: async () => seals[seals.length - 1] ?? null,
      sealAtOrBefore: async (id: string) =>
        seals.filter((seal) => compareStreamIds(seal.id, id) <= 0).pop() ?? null,
    },
    /** The whole file the sink should have written. */
    fileText: () => `${HEADER}${auditLines(entries, seals).join('\n')}\n`,
  };
  return log;
}

const events = (count: number, from = 0) =>
  Array.from({ length: count }, (_, i) => ({ type: 'credential.issued', lease: `lease-${from + i}` }));

describe('audit file sink', () => {
  let dir: string;
  let file: string;
  let errors: Error[];
  let warnings: string[];
  beforeEach(() => {
    dir = tempDir('sink');
    file = path.join(dir, 'audit.jsonl');
    errors = [];
    warnings = [];
  });
  const start = (log: ReturnType<typeof fakeLog>) =>
    startAuditFileSink({
      path: file,
      audit: log.audit,
      brokerIssuer: ISSUER,
      log: 'tl:',
      intervalMs: 3_600_000,
      nowMs: () => NOW_MS,
      onError: (error) => errors.push(error as Error),
      onWarning: (message) => warnings.push(message),
    });
  const text = () => readFileSync(file, 'utf8');

  it('writes a header, each seal after its events, and resumes after a restart without duplicating', async () => {
    const log = fakeLog();
    await log.seal(events(3));
    await log.seal(events(2, 3));
    const sink = await start(log);
    await expect(sink.catchUp()).resolves.toBe(2);
    await sink.stop();
    expect(text()).toBe(log.fileText());
    expect(existsSync(`${file}.lock`)).toBe(false);

    await log.seal(events(4, 5));
    const restarted = await start(log);
    await expect(restarted.catchUp()).resolves.toBe(1);
    await expect(restarted.catchUp()).resolves.toBe(0);
    await restarted.stop();
    expect(text()).toBe(log.fileText());
    expect(errors).toEqual([]);
    expect(warnings).toEqual([]);
  });

  it('saves a torn tail to .torn-*, cuts it off and writes that batch again whole', async () => {
    const log = fakeLog();
    await log.seal(events(2));
    const sink = await start(log);
    await sink.catchUp();
    await sink.stop();
    await log.seal(events(3, 2));
    const nextBatch = `${log.entries.slice(2).map(eventLine).join('\n')}\n${sealLine(log.seals[1]!)}\n`;
    const torn = nextBatch.slice(0, nextBatch.length - 40); // a crash in the middle of the seal line
    appendFileSync(file, torn);

    const restarted = await start(log);
    const saved = readdirSync(dir).filter((name) => name.startsWith('audit.jsonl.torn-'));
    expect(saved).toHaveLength(1);
    expect(readFileSync(path.join(dir, saved[0]!), 'utf8')).toBe(torn);
    expect(warnings).toEqual([expect.stringContaining(saved[0]!)]);
    await expect(restarted.catchUp()).resolves.toBe(1);
    await restarted.stop();
    expect(text()).toBe(log.fileText());
  });

  it('finds its last seal when the 1 MiB search boundary falls inside the seal marker', async () => {
    const log = fakeLog();
    await log.seal(events(2));
    const sink = await start(log);
    await sink.catchUp();
    await sink.stop();
    const good = readFileSync(file);
    const markerAt = good.lastIndexOf('\n{"type":"seal"');
    // A torn tail long enough that the chunk read first starts 7 bytes into the marker.
    const tornLength = markerAt + 7 + MIB - good.length;
    appendFileSync(file, `{"type":"event","id":"x","event":{"purpose":"${'a'.repeat(tornLength - 45)}`);
    expect(statSync(file).size - MIB).toBe(markerAt + 7);

    await log.seal(events(1, 2));
    const restarted = await start(log);
    await restarted.catchUp();
    await restarted.stop();
    expect(text()).toBe(log.fileText());
    expect(warnings).toHaveLength(1);
  });

  it('resumes a file whose last batch passes 1 MiB with a chunk boundary inside a multi-byte character', async () => {
    let log = fakeLog();
    for (let padding = 0; ; padding++) {
      log = fakeLog();
      await log.seal(events(1));
      await log.seal([
        { type: 'task.declared', purpose: 'é'.repeat(300_000) },
        { type: 'task.declared', purpose: 'é'.repeat(300_000), pad: 'x'.repeat(padding) },
      ]);
      const bytes = Buffer.from(log.fileText());
      const atBoundary = bytes[bytes.length - MIB]!;
      if (atBoundary >= 0x80 && atBoundary < 0xc0) break; // a continuation byte: mid-character
    }
    const sink = await start(log);
    await expect(sink.catchUp()).resolves.toBe(2);
    await sink.stop();

    for (let restart = 0; restart < 2; restart++) {
      await log.seal(events(1, 10 + restart));
      const restarted = await start(log);
      await expect(restarted.catchUp()).resolves.toBe(1);
      await restarted.stop();
    }
    const lines = text().split('\n');
    expect(lines.pop()).toBe('');
    for (const line of lines) expect(() => JSON.parse(line)).not.toThrow();
    expect(text()).toBe(log.fileText());
    expect(warnings).toEqual([]);
  });

  it.each([
    ['a foreign file', 'not an audit file\nat all\n', /first line is not a tasklease audit header/],
    [
      'an export of some events',
      `${headerLine({ broker: ISSUER, createdAt: 'x', filter: { task: 't-1' } })}\n`,
      /export of some events/,
    ],
    [
      'another broker’s file',
      `${headerLine({ broker: 'https://other.example', createdAt: 'x' })}\n`,
      /other\.example/,
    ],
    ['a file without a complete first line', 'x'.repeat(100), /no complete first line/],
  ])('refuses to write to %s and leaves it as it was', async (_label, content, message) => {
    writeFileSync(file, content);
    const log = fakeLog();
    await log.seal(events(1));
    await expect(start(log)).rejects.toThrow(message);
    await expect(start(log)).rejects.toThrow(file);
    expect(text()).toBe(content);
    expect(existsSync(`${file}.lock`)).toBe(false);
  });

  it.each([
    ['the log was rewritten and re-sealed (another chain)', { lastSeq: 2, hash: 'ab'.repeat(32) }],
    ['a re-seal with other boundaries', { lastSeq: 1, hash: GENESIS_CHAIN }],
  ])('stops for good, writing nothing, when a seal does not follow on: %s', async (_label, previous) => {
    const log = fakeLog();
    await log.seal(events(2));
    const sink = await start(log);
    await sink.catchUp();
    const before = text();
    await log.seal(events(1, 2), previous);
    await log.seal(events(1, 3));
    await expect(sink.catchUp()).resolves.toBe(0);
    expect(errors.map((e) => e.message)).toEqual([
      "audit seals in Redis no longer follow the file's last seal (seq 2): the log in Redis was rewritten or re-sealed (Redis holds the file's last seal 1700000000000-1, yet a seal after it does not follow it); the file sink has stopped",
    ]);
    await expect(sink.catchUp()).resolves.toBe(0);
    await sink.stop();
    expect(text()).toBe(before);
    expect(errors).toHaveLength(1);
  });

  it('refuses a first seal that does not start the chain in a new file', async () => {
    const log = fakeLog();
    await log.seal(events(2), { lastSeq: 4, hash: GENESIS_CHAIN });
    const sink = await start(log);
    await expect(sink.catchUp()).resolves.toBe(0);
    await sink.stop();
    expect(text()).toBe(HEADER);
    expect(errors.map((e) => e.message)).toEqual([expect.stringMatching(/\(seq 0\).*has stopped/)]);
  });

  it('writes a seal whose events Redis does not all return, and reports it once', async () => {
    const log = fakeLog();
    await log.seal(events(3));
    await log.seal(events(3, 3));
    log.answer = (_lastId, found) => found.slice(1);
    const sink = await start(log);
    await expect(sink.catchUp()).resolves.toBe(2);
    await sink.stop();
    expect(errors.map((e) => e.message)).toEqual([
      `audit seal ${log.seals[0]!.id} covers 3 events but Redis returned 2; written as they are`,
    ]);
    expect(
      text()
        .split('\n')
        .filter((line) => line.startsWith('{"type":"event"')),
    ).toHaveLength(4);
  });

  it('rolls a page back to the last good size when it fails part-way, and writes it whole on the next tick', async () => {
    const log = fakeLog();
    await log.seal(events(2));
    const sink = await start(log);
    await sink.catchUp();
    const goodSize = statSync(file).size;
    await log.seal(events(2, 2));
    await log.seal(events(2, 4));
    // The second seal of the page fails after the first one's batch was appended.
    const failingId = log.seals[2]!.id;
    log.answer = (lastId, found) => {
      if (lastId === failingId) throw new Error('connection lost');
      return found;
    };
    await expect(sink.catchUp()).rejects.toThrow('connection lost');
    expect(statSync(file).size).toBe(goodSize);

    log.answer = (_lastId, found) => found;
    await expect(sink.catchUp()).resolves.toBe(2);
    await sink.stop();
    expect(text()).toBe(log.fileText());
  });
});
