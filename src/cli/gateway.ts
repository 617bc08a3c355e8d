// `edgemesh gateway`: the ingress gateway (Istio Gateway + VirtualService). Not built yet: the
// command documents its flags and says so instead of pretending to run.
import { type FlagSpecs, helpText, parseFlags } from './args.ts';
import { sourceFlags } from './flags.ts';

const gatewayFlags: FlagSpecs = { ...sourceFlags };

export const gatewayHelp = helpText(
  'edgemesh gateway [options]',
  'Runs the ingress gateway: serves Istio Gateways whose selector matches this gateway, routing by\nVirtualService to cluster services.',
  gatewayFlags,
);

export async function gatewayCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const flags = parseFlags('gateway', argv, gatewayFlags);
  if (flags.help) {
    out(gatewayHelp);
    return 0;
  }
  process.stderr.write('edgemesh gateway: the ingress gateway is not available in this build yet\n');
  return 1;
}
