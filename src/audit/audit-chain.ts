import { sha256 } from '../domain/sha256';
import { jwtVerify, SignJWT, type JWTVerifyGetKey } from 'jose';
import { ASYMMETRIC_ALGORITHMS } from '../config/schema';
import type { SigningKeyRing } from '../signing/signing-keys';

/**
 * The audit log's hash chain (docs/architecture.md, "The audit log").
 *
 * Each event, as stored (its stream id and its exact JSON), has a digest; the chain runs over the digests:
 *   digest_n = SHA-256("tasklease-audit-v1\n" ‖ id ‖ "\n" ‖ json)
 *   chain_n  = SHA-256(chain_{n-1} ‖ digest_n),   chain_0 = 32 zero bytes
 * A seal is a JWS, signed with the broker's key, over a run of consecutive events: their digests in order,
 * the chain value before and after them, and their sequence numbers. Changing, removing, inserting or
 * reordering a sealed event breaks its seal; removing or reordering a seal breaks the next one's `prevHash`;
 * forging a seal needs the broker's private key. A single event can be checked against its seal alone (its
 * digest is in the seal's list), so an export of one task's events is evidence without the rest of the log.
 */

export const SEAL_TYPE = 'tasklease-audit-seal+jwt';
export const GENESIS_CHAIN = Buffer.alloc(32).toString('hex');
/**
 * Full SHA-256: workloads choose part of what an event says (purpose, ticket, reason), so a truncated digest
 * would bring collisions within reach.
 */
const DIGEST_BYTES = 32;

export interface SealPayload {
  v: 1;
  /** Which log: the deployment's Redis prefix, so logs sharing signing keys cannot pass off each other's seals. */
  log: string;
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
  return sha256(`tasklease-audit-v1\n${id}\n${json}`);
}

export function nextChain(previousHex: string, digest: Buffer): string {
  return sha256(Buffer.concat([Buffer.from(previousHex, 'hex'), digest])).toString('hex');
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
  log: string,
  previous: { lastSeq: number; hash: string },
  entries: readonly { id: string; json: string }[],
  sealedAtMs: number,
): SealPayload {
  // nextChain, with the chain kept as bytes between events (hex only at the ends).
  const pair = Buffer.alloc(64);
  Buffer.from(previous.hash, 'hex').copy(pair, 0);
  const digests = entries.map((entry) => {
    const digest = eventDigest(entry.id, entry.json);
    digest.copy(pair, 32);
    sha256(pair).copy(pair, 0);
    return digest;
  });
  const hash = pair.subarray(0, 32).toString('hex');
  return {
    v: 1,
    log,
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

/**
 * A seal's signature (against `keys`), type and shape, and that it is stored under its own last event's id.
 * Throws naming what is wrong.
 */
export async function verifySeal(stored: { id: string; jws: string }, keys: JWTVerifyGetKey) {
  const { payload } = await jwtVerify(stored.jws, keys, {
    typ: SEAL_TYPE,
    algorithms: [...ASYMMETRIC_ALGORITHMS],
  });
  const seal = payload as unknown as SealPayload;
  const digests = splitDigests(String(seal.digests ?? ''));
  if (
    seal.v !== 1 ||
    typeof seal.log !== 'string' ||
    seal.lastId !== stored.id ||
    !Number.isSafeInteger(seal.firstSeq) ||
    !Number.isSafeInteger(seal.lastSeq) ||
    digests.length !== seal.lastSeq - seal.firstSeq + 1
  )
    throw new Error('its content does not describe the events it is stored with');
  return { payload: seal, digests };
}

/** Does `seal` carry on exactly where `previous` ended? */
export const follows = (seal: SealPayload, previous: { lastSeq: number; hash: string }): boolean =>
  seal.firstSeq === previous.lastSeq + 1 && seal.prevHash === previous.hash;
