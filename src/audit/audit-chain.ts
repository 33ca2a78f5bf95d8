import { createHash } from 'node:crypto';
import { SignJWT } from 'jose';
import type { SigningKeyRing } from '../signing/signing-keys';

/**
 * The audit log's hash chain (docs/architecture.md, "The audit log").
 *
 * Each event, as stored (its stream id and its exact JSON), has a digest; the chain runs over the digests:
 *   digest_n = SHA-256("tasklease-audit-v1\n" ‖ id ‖ "\n" ‖ json), first 16 bytes
 *   chain_n  = SHA-256(chain_{n-1} ‖ digest_n),   chain_0 = 32 zero bytes
 * A seal is a JWS, signed with the broker's key, over a run of consecutive events: their digests in order,
 * the chain value before and after them, and their sequence numbers. Changing, removing, inserting or
 * reordering a sealed event breaks its seal; removing or reordering a seal breaks the next one's `prevHash`;
 * forging a seal needs the broker's private key. A single event can be checked against its seal alone (its
 * digest is in the seal's list), so an export of one task's events is evidence without the rest of the log.
 */

export const SEAL_TYPE = 'tasklease-audit-seal+jwt';
export const GENESIS_CHAIN = Buffer.alloc(32).toString('hex');
/** 128 bits: a digest names one event; the chain and the signature carry the full strength. */
const DIGEST_BYTES = 16;

export interface SealPayload {
  v: 1;
  /** Sequence numbers (1 = the first event ever sealed) of the first and last event in this seal. */
  firstSeq: number;
  lastSeq: number;
  /** Stream ids of the first and last event; the seal's own stream id is `lastId`. */
  firstId: string;
  lastId: string;
  /** The chain before the first event and after the last one, hex. */
  prevHash: string;
  hash: string;
  /** Every event's digest in order, concatenated, base64url. */
  digests: string;
  sealedAtMs: number;
}

export function eventDigest(id: string, json: string): Buffer {
  return createHash('sha256').update(`tasklease-audit-v1\n${id}\n${json}`).digest().subarray(0, DIGEST_BYTES);
}

export function nextChain(previousHex: string, digest: Buffer): string {
  return createHash('sha256').update(Buffer.from(previousHex, 'hex')).update(digest).digest('hex');
}

export function splitDigests(digests: string): string[] {
  const bytes = Buffer.from(digests, 'base64url');
  const out: string[] = [];
  for (let offset = 0; offset + DIGEST_BYTES <= bytes.length; offset += DIGEST_BYTES)
    out.push(bytes.subarray(offset, offset + DIGEST_BYTES).toString('hex'));
  return out;
}

/** The seal for `entries`, which follow the event `previous` ended on (sequence and chain). */
export function buildSeal(
  previous: { lastSeq: number; hash: string },
  entries: readonly { id: string; json: string }[],
  sealedAtMs: number,
): SealPayload {
  let hash = previous.hash;
  const digests = entries.map((entry) => {
    const digest = eventDigest(entry.id, entry.json);
    hash = nextChain(hash, digest);
    return digest;
  });
  return {
    v: 1,
    firstSeq: previous.lastSeq + 1,
    lastSeq: previous.lastSeq + entries.length,
    firstId: entries[0]?.id ?? '',
    lastId: entries[entries.length - 1]?.id ?? '',
    prevHash: previous.hash,
    hash,
    digests: Buffer.concat(digests).toString('base64url'),
    sealedAtMs,
  };
}

export function signSeal(signingKeys: SigningKeyRing, brokerIssuer: string, seal: SealPayload) {
  const { active } = signingKeys;
  return new SignJWT({ ...seal })
    .setProtectedHeader({ alg: active.alg, kid: active.kid, typ: SEAL_TYPE })
    .setIssuer(brokerIssuer)
    .setIssuedAt(Math.floor(seal.sealedAtMs / 1000))
    .sign(active.privateKey);
}
