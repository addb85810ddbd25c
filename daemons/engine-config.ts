import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { BuildfleetError } from '../imagebuilder/errors.js';

/**
 * How an engine of ours is configured, with no dependencies: a node's agent loads this (and
 * spawns the daemons) before the heavier modules, so a cold node's runtime starts sooner.
 */

/** containerd's config for an engine of our own: own root, state and sockets; no CRI, no metrics. */
export function containerdConfig(paths: { root: string; state: string; socket: string }): string {
  return [
    'version = 2',
    `root = "${paths.root}"`,
    `state = "${paths.state}"`,
    // Plugins that need hardware or other storage, or that only Kubernetes uses.
    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
    '[grpc]',
    `  address = "${paths.socket}"`,
    '[ttrpc]',
    `  address = "${paths.socket}.ttrpc"`,
    '[debug]',
    '  address = ""',
    '[metrics]',
    '  address = ""',
    '',
  ].join('\n');
}

export type DockerdArgsOptions = {
  containerdSocket: string;
  dataRoot: string;
  execRoot: string;
  socket: string;
  pidfile: string;
  experimental?: boolean;
  liveRestore?: boolean;
  insecureRegistries?: string[];
  /** Parent cgroup of every container, so cleanup can find (and kill) a node's containers by cgroup. */
  cgroupParent?: string;
};

/** dockerd on an external containerd, no bridge and no iptables (several engines share this host). */
export function dockerdArgs(options: DockerdArgsOptions): string[] {
  const args = [
    '--containerd', options.containerdSocket,
    '--data-root', options.dataRoot,
    '--exec-root', options.execRoot,
    '--host', `unix://${options.socket}`,
    '--pidfile', options.pidfile,
    '--bridge=none', '--iptables=false', '--ip6tables=false',
  ];
  if (options.experimental) args.push('--experimental');
  if (options.liveRestore) args.push('--live-restore');
  if (options.cgroupParent) args.push('--cgroup-parent', options.cgroupParent);
  for (const registry of options.insecureRegistries ?? []) args.push('--insecure-registry', registry);
  return args;
}

/** Fails with one line naming the Debian package when a command is missing from PATH. */
export async function requireCommands(commands: string[], debianPackage: string): Promise<void> {
  const dirs = (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':').filter(Boolean);
  for (const command of commands) {
    const found = dirs.some((dir) => {
      try {
        accessSync(join(dir, command), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
    if (!found) {
      throw new BuildfleetError('environment', `${command} not found: install it with "apt-get install -y ${debianPackage}" (or run the README's set-up command)`);
    }
  }
}
