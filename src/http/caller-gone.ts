import type { Response } from 'express';

/**
 * Starts watching for the caller hanging up before its answer was sent; the function returns whether it
 * has. A credential minted meanwhile must not outlive that: nobody holds it.
 */
export function watchCallerGone(res: Response): () => boolean {
  let gone = false;
  res.once('close', () => (gone = !res.writableFinished));
  return () => gone;
}
