import { hash } from 'node:crypto';

/** SHA-256 of a string (UTF-8), hex: one call, no Hash object (crypto.hash, Node ≥ 21.7). */
export const sha256Hex = (value: string): string => hash('sha256', value, 'hex');

/** SHA-256, as bytes. */
export const sha256 = (value: string | Buffer): Buffer => hash('sha256', value, 'buffer');
