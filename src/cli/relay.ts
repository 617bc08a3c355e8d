// `edgemesh relay`: the cloud relay for cross-LAN traffic. Not built yet: the command documents
// its flags and says so instead of pretending to run.
import { type FlagSpecs, helpText, parseFlags } from './args.ts';

const relayFlags: FlagSpecs = {
  config: { type: 'string', value: 'FILE', help: 'YAML config file (modules.edgeTunnel)' },
  'log-level': {
    type: 'string',
    value: 'LEVEL',
    help: 'trace|debug|info|warn|error|fatal|silent (default info)',
  },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};

export const relayHelp = helpText(
  'edgemesh relay [options]',
  'Runs a relay that agents in different LANs connect to, so their endpoints can reach each other.',
  relayFlags,
);

export async function relayCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const flags = parseFlags('relay', argv, relayFlags);
  if (flags.help) {
    out(relayHelp);
    return 0;
  }
  process.stderr.write('edgemesh relay: the relay is not available in this build yet\n');
  return 1;
}
