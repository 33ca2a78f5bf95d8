import { readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * The broker's Vault policy exactly as docs/vault.md gives it (its one `hcl` block), as fake-vault rules:
 * the tests run the broker with what the docs tell operators to grant, so the docs cannot drift from it.
 */
export function documentedBrokerPolicy(): Array<{ path: string; capabilities: string[] }> {
  const docs = readFileSync(path.join(__dirname, '../../docs/vault.md'), 'utf8');
  const hcl = /```hcl\n([\s\S]*?)```/.exec(docs)?.[1];
  if (!hcl) throw new Error('docs/vault.md has no hcl block');
  const rules = [...hcl.matchAll(/path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]\s*\}/g)].map((match) => ({
    path: match[1] as string,
    capabilities: [...(match[2] as string).matchAll(/"([a-z]+)"/g)].map((cap) => cap[1] as string),
  }));
  const blocks = hcl.match(/^path /gm)?.length ?? 0;
  if (rules.length === 0 || rules.length !== blocks)
    throw new Error(`docs/vault.md: ${blocks} path blocks, ${rules.length} understood`);
  return rules;
}
