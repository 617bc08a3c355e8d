// The bridge device `edgemesh0` that carries the DNS address 169.254.96.16: a device of its own
// so the address exists on every node without touching real interfaces, and goes away with us.
import { execFile } from 'node:child_process';
import net from 'node:net';
import { promisify } from 'node:util';
import { EdgemeshError, ErrorCode } from '../errors.ts';
import type { Logger } from '../util/log.ts';

const exec = promisify(execFile);

/** A bridge we made sure of; `created` says whether stop must remove it. */
export interface BridgeDevice {
  name: string;
  ip: string;
  created: boolean;
  addressAdded: boolean;
}

async function ip(args: string[]): Promise<string> {
  try {
    const { stdout } = await exec('ip', args, { timeout: 10_000 });
    return stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    throw new EdgemeshError(
      ErrorCode.COMMAND,
      `ip ${args.join(' ')}: ${e.code === 'ENOENT' ? 'the ip command (iproute2) is missing' : (e.stderr ?? e.message).trim()}`,
      { cause: err },
    );
  }
}

/** True when `dev` exists. */
async function exists(dev: string): Promise<boolean> {
  try {
    await ip(['link', 'show', 'dev', dev]);
    return true;
  } catch {
    return false;
  }
}

/**
 * Creates bridge `name` holding `address` (/32 or /128) and sets it up; reuses an existing one.
 * Throws EDGEMESH_ERR_COMMAND (with "needs root" when that is the reason).
 */
export async function ensureBridge(name: string, address: string, log: Logger): Promise<BridgeDevice> {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const device: BridgeDevice = { name, ip: address, created: false, addressAdded: false };
  try {
    if (!(await exists(name))) {
      await ip(['link', 'add', name, 'type', 'bridge']);
      device.created = true;
    }
    const prefix = net.isIPv6(address) ? 128 : 32;
    const current = await ip(['-o', 'addr', 'show', 'dev', name]);
    if (!current.split(/\s+/).some((w) => w.split('/')[0] === address)) {
      await ip(['addr', 'add', `${address}/${prefix}`, 'dev', name]);
      device.addressAdded = true;
    }
    await ip(['link', 'set', name, 'up']);
  } catch (err) {
    if (device.created) await removeBridge(device, log);
    if (!isRoot) {
      throw new EdgemeshError(
        ErrorCode.COMMAND,
        `dns: creating bridge ${name} with ${address} needs root (CAP_NET_ADMIN); run as root, or pass --dns-listen IP:PORT for an address this host already has`,
        { cause: err },
      );
    }
    throw err;
  }
  log.info({ device: name, ip: address, created: device.created }, 'dns: bridge device ready');
  return device;
}

/** Removes what ensureBridge added: the device if it made it, else only the address. */
export async function removeBridge(device: BridgeDevice, log: Logger): Promise<void> {
  try {
    if (device.created) await ip(['link', 'del', device.name]);
    else if (device.addressAdded) {
      const prefix = net.isIPv6(device.ip) ? 128 : 32;
      await ip(['addr', 'del', `${device.ip}/${prefix}`, 'dev', device.name]);
    }
  } catch (err) {
    log.warn({ device: device.name, err: (err as Error).message }, 'dns: could not remove bridge device');
  }
}
