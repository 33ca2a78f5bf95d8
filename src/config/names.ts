import { z } from 'zod';

/** Names used in keys, policies and URLs: lower-case letters, digits and dashes. */
export const name = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'use lower-case letters, digits and dashes');
