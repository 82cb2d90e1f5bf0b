# rsh connection plugin for Ansible.
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Ansible transport over rsh: each task step is one `rsh-client` run."""

from __future__ import annotations

DOCUMENTATION = r"""
    name: rsh
    short_description: run tasks over rsh (the rsh-client binary)
    description:
        - Runs commands, and copies files, over rsh instead of ssh. Each
          operation is one C(rsh-client) process. C(exec_command) runs the
          command line through the remote shell, C(put_file) and
          C(fetch_file) stream the file through C(cat) on the remote side.
        - The client's key, known_hosts and config file come from
          C($RSH_HOME) (default C(~/.rsh)), exactly as for rsh-client on
          the command line; set O(rsh_home) to use another.
    author: rsh developers
    version_added: "2.15"
    options:
      host:
        description: Host to connect to (a name, an address or an alias of the rsh config file).
        type: string
        default: inventory_hostname
        vars:
          - name: inventory_hostname
          - name: ansible_host
          - name: ansible_rsh_host
      port:
        description: TCP port of the rsh server (rsh-client's default, 7022, when unset).
        type: int
        ini:
          - section: defaults
            key: remote_port
        env:
          - name: ANSIBLE_REMOTE_PORT
        vars:
          - name: ansible_port
          - name: ansible_rsh_port
        keyword:
          - name: port
      remote_user:
        description:
          - User to log in as. An rsh server runs everything as the one user it
            runs as; asking for another is refused by the server.
        type: string
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
          - name: ansible_rsh_user
        cli:
          - name: user
        keyword:
          - name: remote_user
      rsh_executable:
        description: The rsh-client program to run.
        type: string
        default: rsh-client
        ini:
          - section: rsh_connection
            key: executable
        env:
          - name: ANSIBLE_RSH_EXECUTABLE
        vars:
          - name: ansible_rsh_executable
      rsh_args:
        description: Extra rsh-client arguments, split as a shell would (for example C(--accept-new)).
        type: string
        default: ""
        ini:
          - section: rsh_connection
            key: rsh_args
        env:
          - name: ANSIBLE_RSH_ARGS
        vars:
          - name: ansible_rsh_args
      rsh_home:
        description: RSH_HOME for rsh-client (its key, known_hosts and config); inherited when unset.
        type: string
        ini:
          - section: rsh_connection
            key: rsh_home
        env:
          - name: ANSIBLE_RSH_HOME
        vars:
          - name: ansible_rsh_home
      timeout:
        description: Seconds to wait for the connection (rsh-client's ConnectTimeout).
        type: int
        default: 10
        ini:
          - section: defaults
            key: timeout
        env:
          - name: ANSIBLE_TIMEOUT
        vars:
          - name: ansible_rsh_timeout
        cli:
          - name: timeout
    extends_documentation_fragment:
      - connection_pipelining
"""

import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

# rsh-client, like ssh, exits 255 when rsh itself failed (cannot connect,
# key refused, protocol error) and otherwise with the remote command's code.
RSH_FAILURE = 255


class Connection(ConnectionBase):
    """rsh-based connections."""

    transport = "rsh"
    has_pipelining = True

    def _connect(self):
        # Nothing to hold open: every operation is one rsh-client run, and a
        # one-shot rsh-client costs a few milliseconds (no ControlMaster needed).
        self._connected = True
        return self

    def _argv(self, command, stdin_null):
        argv = [self.get_option("rsh_executable")]
        argv += shlex.split(self.get_option("rsh_args") or "")
        argv += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=%d" % int(self.get_option("timeout"))]
        if stdin_null:
            argv.append("-n")
        port = self.get_option("port")
        if port:
            argv += ["-p", str(port)]
        user = self.get_option("remote_user")
        if user:
            argv += ["-l", user]
        # `--` so that no host or command is taken for an option.
        argv += ["--", self.get_option("host"), command]
        return argv

    def _env(self):
        env = dict(os.environ)
        home = self.get_option("rsh_home")
        if home:
            env["RSH_HOME"] = os.path.expanduser(home)
        return env

    def _run(self, command, stdin=None, in_data=None, stdout=subprocess.PIPE):
        argv = self._argv(command, stdin_null=stdin is None and in_data is None)
        display.vvv("RSH: EXEC %s" % " ".join(shlex.quote(a) for a in argv), host=self.get_option("host"))
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if in_data is not None else (stdin or subprocess.DEVNULL),
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=self._env(),
            )
        except OSError as err:
            raise AnsibleConnectionFailure("cannot run %s: %s" % (argv[0], to_native(err)))
        out, err = proc.communicate(in_data)
        return proc.returncode, out or b"", err or b""

    @staticmethod
    def _check_rsh(rc, err):
        if rc == RSH_FAILURE and err.startswith(b"rsh-client:"):
            # rsh itself failed: the host is unreachable, not the task failed.
            raise AnsibleConnectionFailure(to_text(err.strip(), errors="surrogate_or_replace"))

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        rc, out, err = self._run(cmd, in_data=in_data)
        self._check_rsh(rc, err)
        return rc, out, err

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv("RSH: PUT %s TO %s" % (in_path, out_path), host=self.get_option("host"))
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound("file or module does not exist: %s" % to_native(in_path))
        command = "cat > %s" % self._shell.quote(out_path)
        with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as src:
            rc, _, err = self._run(command, stdin=src)
        self._check_rsh(rc, err)
        if rc != 0:
            raise AnsibleError("failed to transfer file to %s: %s" % (out_path, to_native(err)))

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv("RSH: FETCH %s TO %s" % (in_path, out_path), host=self.get_option("host"))
        command = "cat %s" % self._shell.quote(in_path)
        b_out = to_bytes(out_path, errors="surrogate_or_strict")
        partial = b_out + b".rsh-partial"
        try:
            with open(partial, "wb") as dst:
                rc, _, err = self._run(command, stdout=dst)
            self._check_rsh(rc, err)
            if rc != 0:
                raise AnsibleError("failed to fetch %s: %s" % (in_path, to_native(err)))
            os.replace(partial, b_out)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)

    def close(self):
        self._connected = False
