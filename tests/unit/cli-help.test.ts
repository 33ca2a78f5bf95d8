import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/main';

/** Every command, down to the leaves, as `tasklease lease revoke`. */
function commandsOf(command: Command, prefix: string[] = []): [string, Command][] {
  return command.commands.flatMap((sub) => {
    const name = [...prefix, sub.name()];
    return [[name.join(' '), sub] as [string, Command], ...commandsOf(sub, name)];
  });
}

describe('the CLI', () => {
  const commands = commandsOf(buildProgram());

  it('has the on-call commands', () => {
    const names = commands.map(([name]) => name);
    for (const name of [
      'lease ls',
      'lease revoke',
      'lease retry',
      'audit verify',
      'audit export',
      'task show',
      'record verify',
      'approvals ls',
      'approvals show',
      'approvals approve',
      'approvals deny',
      'approvals wait',
    ])
      expect(names).toContain(name);
  });

  it.each(commands)('%s: describes itself, has --help, and prints no colour codes', (name, command) => {
    expect(command.description().length).toBeGreaterThan(10);
    const help = command.helpInformation();
    expect(help).toContain(`Usage: tasklease ${name}`);
    expect(help).toContain('-h, --help');
    // No ANSI escapes: the same bytes on a TTY and in a pipe or a log.
    expect(help).not.toContain(String.fromCharCode(27));
  });

  // Admin and verification commands: tables for people, --json for scripts (audit export writes JSONL).
  const scriptable = commands.filter(
    ([name, command]) =>
      command.commands.length === 0 &&
      /^(lease|audit|task|record|approvals) /.test(name) &&
      name !== 'audit export',
  );
  it.each(scriptable)('%s: offers --json for scripts', (_name, command) => {
    expect(command.options.map((option) => option.long)).toContain('--json');
  });
});
