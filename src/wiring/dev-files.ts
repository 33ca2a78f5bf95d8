import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';
import { generateSigningJwks } from '../signing/signing-keys';

/** The dev issuer's `iss`; the dev config trusts it through a JWKS file next to it. */
export const DEV_ISSUER = 'tasklease-dev';
const TEMPLATE_DIR = path.resolve(__dirname, '../../config/dev');

const writeSecret = (file: string, value: unknown) => {
  writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
};

/**
 * First run of `tasklease dev`: a config and policies copied from config/dev, a dev issuer key pair, and
 * a broker signing JWKS, all under the dev directory. Later runs reuse them.
 */
export async function ensureDevFiles(
  devDir: string,
): Promise<{ configFile: string; signingKeysJson: string }> {
  mkdirSync(path.join(devDir, 'policies'), { recursive: true });
  const configFile = path.join(devDir, 'tasklease.yaml');
  if (!existsSync(configFile)) {
    copyFileSync(path.join(TEMPLATE_DIR, 'tasklease.yaml'), configFile);
    for (const file of readdirSync(path.join(TEMPLATE_DIR, 'policies'))) {
      copyFileSync(path.join(TEMPLATE_DIR, 'policies', file), path.join(devDir, 'policies', file));
    }
  }
  const issuerKeyFile = path.join(devDir, 'dev-issuer.private.jwk.json');
  if (!existsSync(issuerKeyFile)) {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const kid = `dev-${Date.now().toString(36)}`;
    writeSecret(issuerKeyFile, { ...(await exportJWK(privateKey)), kid, alg: 'ES256' });
    writeFileSync(
      path.join(devDir, 'dev-issuer.jwks.json'),
      JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }] }, null, 2),
    );
  }
  const signingFile = path.join(devDir, 'signing-keys.private.jwks.json');
  if (!existsSync(signingFile)) writeSecret(signingFile, await generateSigningJwks());
  return { configFile, signingKeysJson: readFileSync(signingFile, 'utf8') };
}

/** `tasklease dev-token`: an identity token from the dev issuer, for the walkthrough and local agents. */
export async function mintDevToken(
  devDir: string,
  options: { subject: string; ttlSeconds: number; claims: Record<string, string>; audience?: string },
): Promise<string> {
  const file = path.join(devDir, 'dev-issuer.private.jwk.json');
  if (!existsSync(file)) throw new Error(`no dev issuer key in ${devDir}: run "tasklease dev" first`);
  const jwk = JSON.parse(readFileSync(file, 'utf8')) as JWK;
  const key = await importJWK(jwk, 'ES256');
  return new SignJWT({ ...options.claims })
    .setProtectedHeader({ alg: 'ES256', kid: jwk.kid as string, typ: 'JWT' })
    .setIssuer(DEV_ISSUER)
    .setAudience(options.audience ?? 'tasklease')
    .setSubject(options.subject)
    .setIssuedAt()
    .setExpirationTime(`${options.ttlSeconds}s`)
    .sign(key);
}
