import { execa } from 'execa';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { DockerEngine } from '../../daemons/index.js';

/**
 * Test images for the squash conformance suite: each small, FROM the local busybox base, built
 * with `docker build --network none`, several RUN layers that exercise one corner of the layer
 * format (whiteouts, opaque dirs, hardlinks across layers, PAX-only fields). The oracle for a
 * squash is what Docker shows for the image (test/helpers/rootfs-oracle.ts); oracle.test.ts
 * checks that each image really holds what its Dockerfile promises.
 *
 * What Docker 20.10 and busybox 1.35 cannot make (so no case has it):
 * - sub-second mtimes: busybox `touch -d` takes no fractions and Docker truncates every mtime to
 *   whole seconds when it commits a layer, extracts an ADDed tar and exports (see security-capability);
 * - xattrs other than security.capability: Docker's tar writer drops them (see security-capability);
 * - a name starting with `.wh.`: it is a whiteout in a layer tar. Names that contain it are here;
 * - mtimes before the epoch as a date: busybox `touch -d` rejects them, `@-86400` works;
 * - uid/gid 4294967295 is (uid_t)-1, "no change" for chown; 4294967294 is the largest real one.
 */
export type ConformanceCase = {
  name: string;
  dockerfile: string;
  files?: Record<string, string | Buffer>;
  /** Adds files to the build context (which already holds Dockerfile and files) before the build. */
  prepare?: (contextDir: string) => Promise<void>;
};

export const BASE = 'buildfleet/busybox:latest';

/** Quotes for sh -c (RUN's shell form). */
function q(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

function dockerfile(...lines: string[]): string {
  return [`FROM ${BASE}`, ...lines, ''].join('\n');
}

/** Paths of the long-and-unicode-names case, for checks. */
export const longNames = {
  over100: `/names/${'a'.repeat(120)}`,
  over255: `/names/${'d'.repeat(100)}/${'e'.repeat(100)}/${'f'.repeat(80)}.txt`,
  maxComponent: `/names/${'n'.repeat(255)}`,
  /** 255 bytes of UTF-8 (127 two-byte characters and one byte): splitting it by bytes breaks a character. */
  unicodeMaxComponent: `/names/${'é'.repeat(127)}x`,
  /** Deleted in a later layer: its whiteout `.wh.` + 252 bytes is longer than NAME_MAX. */
  deletedLong: `/names/${'x'.repeat(252)}`,
  linkToOver255: `/names/link-to-long`,
  hardlinkToOver255: `/names/hardlink-to-long`,
  unicode: ['/names/héllo wörld.txt', '/names/日本語/ファイル.txt', '/names/🚀.bin', "/names/it's", '/names/back\\slash', '/names/new\nline'],
  renamedFrom: '/names/renamé-from',
  renamedTo: '/names/renamé-to',
};

/** The xattr `setcap cap_net_raw+ep` writes (VFS_CAP_REVISION_2, effective, CAP_NET_RAW permitted). */
export const CAP_NET_RAW_EP = '0x0100000200200000000000000000000000000000';

export const conformanceCases: ConformanceCase[] = [
  {
    name: 'hardlink-target-deleted',
    dockerfile: dockerfile(
      'RUN mkdir /hl && echo original > /hl/target && ln /hl/target /hl/link1 && ln /hl/target /hl/link2',
      'RUN rm /hl/target',
      'RUN echo unrelated > /hl/other',
    ),
  },
  {
    name: 'hardlink-target-overwritten',
    dockerfile: dockerfile(
      'RUN mkdir /hl && echo original > /hl/target && ln /hl/target /hl/link && echo original2 > /hl/renamed-over && ln /hl/renamed-over /hl/link2',
      // Written in place (copy-up of that name only) and replaced by a rename.
      'RUN echo replaced > /hl/target && echo new > /hl/tmp && mv /hl/tmp /hl/renamed-over',
    ),
  },
  {
    name: 'hardlink-chmod-splits-group',
    dockerfile: dockerfile(
      'RUN mkdir /hl && echo shared > /hl/a && ln /hl/a /hl/b && ln /hl/a /hl/c && ln /hl/a /hl/d',
      'RUN chmod 0600 /hl/b',
      'RUN chown 1234:5678 /hl/c',
    ),
  },
  {
    name: 'hardlink-added-later',
    dockerfile: dockerfile(
      'RUN mkdir -p /hl/dir && echo base > /hl/base',
      'RUN ln /hl/base /hl/dir/second && ln /hl/base /hl/third',
      'RUN echo unrelated > /hl/unrelated',
    ),
  },
  {
    name: 'opaque-dir-recreated',
    dockerfile: dockerfile(
      'RUN mkdir -p /op/dir/sub && echo old > /op/dir/old && echo old > /op/dir/sub/deep && chmod 0750 /op/dir',
      'RUN rm -rf /op/dir && mkdir /op/dir && echo new > /op/dir/new',
      'RUN echo more > /op/dir/more',
    ),
  },
  {
    name: 'delete-recreate-three-layers',
    dockerfile: dockerfile(
      'RUN mkdir -p /dr/dir && echo first > /dr/file && echo first > /dr/dir/inner',
      'RUN rm -rf /dr/file /dr/dir',
      'RUN echo third > /dr/file && mkdir /dr/dir && echo third > /dr/dir/other',
    ),
  },
  {
    name: 'dir-replaced-by-file-and-symlink',
    dockerfile: dockerfile(
      'RUN mkdir -p /rp/tofile/sub /rp/tolink/sub /rp/target /rp/fromfile && echo x > /rp/tofile/sub/x && echo y > /rp/tolink/y && echo t > /rp/target/t && rmdir /rp/fromfile && echo f > /rp/fromfile',
      'RUN rm -rf /rp/tofile /rp/tolink /rp/fromfile && echo now-a-file > /rp/tofile && ln -s target /rp/tolink && mkdir /rp/fromfile && echo inside > /rp/fromfile/inside',
      'RUN echo later > /rp/target/later',
    ),
  },
  {
    name: 'symlink-dangling',
    dockerfile: dockerfile(
      'RUN mkdir -p /sl/dir && echo t > /sl/target && ln -s target /sl/rel && ln -s /sl/target /sl/abs && ln -s dir /sl/dirlink && ln -s /nowhere/at/all /sl/never',
      'RUN rm /sl/target && rm -rf /sl/dir',
    ),
  },
  {
    name: 'whiteout-like-names',
    dockerfile: dockerfile(
      // Names that contain `.wh.` (or start like one without being one) are ordinary files.
      'RUN mkdir -p /wh/dir.wh.d && cd /wh && echo 1 > a.wh.b && echo b > b && echo 1 > x.wh..wh..opq && echo 1 > ..wh.dots && echo 1 > trailing.wh. && echo 1 > .wh && echo 1 > .whiteout && echo in > dir.wh.d/f && echo p > plain',
      // Deleting them writes whiteouts named `.wh.a.wh.b`, `.wh.dir.wh.d`, ...
      'RUN cd /wh && rm plain ..wh.dots && echo 2 > a.wh.b',
      'RUN rm -rf /wh/dir.wh.d /wh/.wh',
    ),
  },
  {
    name: 'long-and-unicode-names',
    dockerfile: dockerfile(
      `RUN mkdir -p ${q(dirname(longNames.over255))} ${q('/names/日本語')} && echo 100 > ${q(longNames.over100)} && echo 255 > ${q(longNames.over255)}` +
        ` && echo max > ${q(longNames.maxComponent)} && echo uni > ${q(longNames.unicodeMaxComponent)} && echo gone > ${q(longNames.deletedLong)}` +
        ` && ln -s ${q(longNames.over255)} ${q(longNames.linkToOver255)} && ln ${q(longNames.over255)} ${q(longNames.hardlinkToOver255)}` +
        ` && echo move > ${q(longNames.renamedFrom)}` +
        longNames.unicode.map((name) => (name.includes('\n') ? ` && echo nl > "$(printf ${q(name.replace('\n', '\\n'))})"` : ` && echo u > ${q(name)}`)).join(''),
      `RUN rm ${q(longNames.deletedLong)} && chmod 0600 ${q(longNames.maxComponent)} && echo uni2 > ${q(longNames.unicodeMaxComponent)}`,
      `RUN mv ${q(longNames.renamedFrom)} ${q(longNames.renamedTo)}`,
    ),
  },
  {
    name: 'non-utf8-names',
    // On Linux a name is bytes: none of these is UTF-8 (busybox printf writes the octal bytes).
    dockerfile: dockerfile(
      String.raw`RUN mkdir /nu && cd /nu && echo x > "$(printf 'bad\377name')" && ln -s "$(printf 'bad\377name')" "$(printf 'link\376')" && ln "$(printf 'bad\377name')" "$(printf 'hard\375')"` +
        String.raw` && mkdir "$(printf 'op\374')" && echo y > "$(printf 'op\374/in\373')" && echo z > "$(printf 'gone\372')" && ln -s "$(printf '/nowhere/\300\257')" dangling && echo o > "$(printf 'other\376x')"`,
      // A whiteout `.wh.` + those bytes, a hardlink added to a lower file, a new name that mixes UTF-8 in.
      String.raw`RUN cd /nu && rm "$(printf 'gone\372')" && ln "$(printf 'other\376x')" "$(printf 'later\371')" && echo w > "$(printf 'new\370é')"`,
      // An opaque directory of such a name.
      String.raw`RUN cd /nu && rm -rf "$(printf 'op\374')" && mkdir "$(printf 'op\374')" && echo again > "$(printf 'op\374/again')"`,
    ),
  },
  {
    name: 'big-uid-gid',
    dockerfile: dockerfile(
      // 262143: tar-stream's clamp; 2097151: the largest octal ustar value; 4294967294: the largest real id.
      'RUN mkdir /ids && echo a > /ids/big && chown 300000:400000 /ids/big && echo b > /ids/max && chown 4294967294:4294967294 /ids/max' +
        ' && mkdir /ids/dir && chown 2097152:2097152 /ids/dir && ln -s big /ids/link && chown -h 262144:262144 /ids/link',
      'RUN chown 500000:600000 /ids/big',
    ),
  },
  {
    name: 'chmod-chown-only-later',
    dockerfile: dockerfile(
      'RUN mkdir -p /perm/dir/sub && echo f > /perm/file && echo g > /perm/dir/sub/g && ln -s file /perm/link',
      'RUN chmod 0640 /perm/file && chmod 0700 /perm/dir',
      'RUN chown 1000:1000 /perm/dir/sub/g && chown -h 1000:2000 /perm/link',
      'RUN chown 33:44 /perm/dir/sub',
    ),
  },
  {
    name: 'special-mode-bits',
    dockerfile: dockerfile(
      'RUN mkdir -p /sp/sticky /sp/sgid-dir && echo s > /sp/setuid && chmod 4755 /sp/setuid && echo g > /sp/setgid && chmod 2755 /sp/setgid' +
        ' && chmod 1777 /sp/sticky && chmod 2775 /sp/sgid-dir && echo all > /sp/all && chmod 7777 /sp/all',
      'RUN echo child > /sp/sgid-dir/child && chmod 6711 /sp/setgid',
    ),
  },
  {
    name: 'fifo-and-devices',
    dockerfile: dockerfile(
      'RUN mkdir /devs && mkfifo /devs/fifo && mknod /devs/null c 1 3 && mknod /devs/loop b 7 200 && mknod /devs/wide c 4095 1048575 && mknod /devs/recreated b 7 200',
      'RUN chmod 0600 /devs/null && chown 5:6 /devs/fifo',
      'RUN rm /devs/recreated && mknod /devs/recreated b 7 201',
    ),
  },
  {
    name: 'config-only',
    // No filesystem layer of its own: the image's layers are the base's.
    dockerfile: dockerfile('ENV CONFIG_ONLY=1', 'LABEL org.example.case="config-only"', 'CMD ["sh"]'),
  },
  {
    name: 'security-capability',
    dockerfile: dockerfile(
      'ADD caps.tar /',
      'RUN ln /caps/netraw /caps/netraw-link',
      // chmod copies up and keeps the capability; chown makes the kernel remove it.
      'RUN chmod 0750 /caps/second && chown 1:1 /caps/dropped',
    ),
    prepare: async (contextDir) => {
      // busybox cannot set file capabilities: make them on the host, in a tar Docker extracts.
      const stage = await mkdtemp(join(tmpdir(), 'buildfleet-caps-'));
      try {
        await mkdir(join(stage, 'caps'));
        for (const name of ['netraw', 'second', 'dropped', 'subsecond', 'user-xattr']) {
          await writeFile(join(stage, 'caps', name), `#!/bin/sh\necho ${name}\n`, { mode: 0o755 });
        }
        for (const name of ['netraw', 'second', 'dropped']) await execa('setcap', ['cap_net_raw+ep', join(stage, 'caps', name)]);
        // Docker drops both: the tar carries them, the image does not (oracle.test.ts checks it).
        await execa('setfattr', ['-n', 'user.note', '-v', 'kept-by-tar', join(stage, 'caps', 'user-xattr')]);
        await execa('touch', ['-d', '2021-05-06 07:08:09.123456789', join(stage, 'caps', 'subsecond')]);
        await execa('touch', ['-d', '2020-01-01 00:00:00', join(stage, 'caps')]);
        await execa('tar', ['--xattrs', '--xattrs-include=*', '--format=posix', '--numeric-owner', '--owner=0', '--group=0', '-cf', join(contextDir, 'caps.tar'), '-C', stage, 'caps']);
      } finally {
        await rm(stage, { recursive: true, force: true });
      }
    },
  },
  {
    name: 'explicit-mtimes',
    // Whole seconds only (see the note at the top). Directory mtimes matter for K > 1 layers.
    dockerfile: dockerfile(
      "RUN mkdir -p /mt/dir/sub && echo a > /mt/dir/sub/a && ln -s a /mt/dir/sub/link && touch -d '2001-02-03 04:05:06' /mt/dir/sub/a" +
        " && touch -h -d '2004-01-01 00:00:00' /mt/dir/sub/link && touch -d '2002-01-01 00:00:00' /mt/dir/sub && touch -d '2003-01-01 00:00:00' /mt/dir" +
        ' && echo epoch > /mt/epoch && touch -d @0 /mt/epoch && echo negative > /mt/negative && touch -d @-86400 /mt/negative',
      "RUN touch -d '1999-12-31 23:59:59' /mt/dir/sub/a",
      "RUN echo b > /mt/dir/sub/b && touch -d '2005-06-07 08:09:10' /mt/dir/sub /mt/dir/sub/b",
    ),
  },
  {
    name: 'sparse-file',
    dockerfile: dockerfile(
      'RUN mkdir /sparse && dd if=/dev/zero of=/sparse/hole bs=1 count=1 seek=4194303 2>/dev/null && truncate -s 2M /sparse/all-hole' +
        ' && printf head > /sparse/mixed && printf tail | dd of=/sparse/mixed bs=1 seek=3000000 conv=notrunc 2>/dev/null',
      'RUN truncate -s 6M /sparse/all-hole && printf more | dd of=/sparse/hole bs=1 seek=100 conv=notrunc 2>/dev/null',
    ),
  },
  {
    name: 'empty-directory',
    dockerfile: dockerfile(
      'RUN mkdir -p /empty/plain /empty/nested/leaf /empty/mode && chmod 0711 /empty/mode && chown 7:8 /empty/plain',
      'RUN rmdir /empty/nested/leaf && mkdir /empty/later',
    ),
  },
  {
    name: 'config-heavy',
    dockerfile: dockerfile(
      'ENV APP_HOME=/srv/app LANG=C.UTF-8 WITH_SPACE="a b" EQUALS=k=v',
      'WORKDIR /srv/app',
      'RUN echo app > main.sh && chmod 0755 main.sh',
      'USER 1000:1000',
      'LABEL org.example.team="build" org.example.unicode="héllo" org.example.empty=""',
      'EXPOSE 8080/tcp 9090/udp',
      'HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=2 CMD ["/bin/true"]',
      'VOLUME ["/data", "/srv/app/cache"]',
      'STOPSIGNAL SIGTERM',
      'ENTRYPOINT ["/bin/sh", "-c"]',
      'CMD ["echo hello"]',
    ),
  },
];

/** Builds one case with real `docker build --network none` (files, then prepare, then the build). */
export async function buildConformanceCase(engine: DockerEngine, tag: string, testCase: ConformanceCase): Promise<void> {
  const context = await mkdtemp(join(tmpdir(), 'buildfleet-case-'));
  try {
    await writeFile(join(context, 'Dockerfile'), testCase.dockerfile);
    for (const [name, content] of Object.entries(testCase.files ?? {})) {
      await mkdir(dirname(join(context, name)), { recursive: true });
      await writeFile(join(context, name), content);
    }
    await testCase.prepare?.(context);
    await engine.cli(['build', '--network', 'none', '-q', '-t', tag, context]);
  } finally {
    await rm(context, { recursive: true, force: true });
  }
}
