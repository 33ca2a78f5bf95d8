import { z } from 'zod';

/**
 * Characters that make what a reader sees differ from what is stored: C0 and C1 controls (DEL included),
 * bidirectional overrides, embeddings, isolates and marks (U+061C, U+200E–U+200F, U+202A–U+202E,
 * U+2066–U+2069), and the line and paragraph separators U+2028/U+2029. Refused in every free-text field a
 * caller sends (purpose, ticket, ref, reasons, summaries), so an approver's terminal, a log line or the
 * console never shows one raw.
 */
// eslint-disable-next-line no-control-regex
const MISLEADING = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/u;

/** With the `u` flag a surrogate matches only when it is not half of a pair: a lone one. */
const LONE_SURROGATE = /[\ud800-\udfff]/u;

/** Free text from a caller: trimmed, 1..max characters, well-formed Unicode, nothing misleading. */
export const callerText = (max: number) =>
  z
    .string()
    .trim()
    .min(1)
    .max(max)
    // A lone surrogate ("\ud800") is not text: Cedar and JSON consumers choke on it.
    .refine((value) => !LONE_SURROGATE.test(value), 'well-formed Unicode (no lone surrogates)')
    .refine(
      (value) => !MISLEADING.test(value),
      'no control, bidirectional-override or line-separator characters',
    );
