"""A throwaway Dovecot (Debian's dovecot-imapd and dovecot-pop3d) on 127.0.0.1: IMAPS and POP3S on free high ports.

Its own configuration, state, Maildirs, self-signed certificate and passwd file live in one temporary
folder; the system's Dovecot (if any) is left alone. As root the mail user is nobody, since Dovecot
refuses to run a mailbox as root; as anyone else, everything runs as that user.
"""

from __future__ import annotations

import getpass
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from smtp_sink import self_signed_certificate

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "throwaway-password"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Dovecot:
    folder: Path
    imaps_port: int
    pop3s_port: int
    certificate: Path

    def stop(self) -> None:
        pid_file = self.folder / "run" / "master.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)


def installed() -> bool:
    return Path(DOVECOT).exists()


def start(folder: Path) -> Dovecot:
    """Write a configuration into `folder`, start Dovecot with it, and wait until both ports answer."""
    certificate, key = self_signed_certificate(folder)
    home = folder / "home"
    for sub in ("run", "state", "home"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n", encoding="utf-8")
    if os.geteuid() == 0:
        mail_user, mail_group = "nobody", grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
        os.chown(home, pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
        folder.chmod(0o755)
        process_users = ""
    else:
        mail_user, mail_group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
        process_users = f"default_internal_user = {mail_user}\ndefault_login_user = {mail_user}\n"
    imaps, pop3s = free_port(), free_port()
    (folder / "dovecot.conf").write_text(
        f"""base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
{process_users}protocols = imap pop3
listen = 127.0.0.1
ssl = required
ssl_cert = <{certificate}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {folder}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={home}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""",
        encoding="utf-8",
    )
    # Dovecot forks into the background: a pipe for its output would stay open (and a run wait) forever.
    with (folder / "start.log").open("w") as log:
        subprocess.run([DOVECOT, "-c", str(folder / "dovecot.conf")], check=True, stdout=log, stderr=log)
    server = Dovecot(folder, imaps, pop3s, certificate)
    deadline = time.monotonic() + 30
    for port in (imaps, pop3s):
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    server.stop()
                    log = (
                        (folder / "dovecot.log").read_text(errors="replace")
                        if (folder / "dovecot.log").exists()
                        else ""
                    )
                    raise RuntimeError(f"dovecot did not listen on {port}:\n{log}") from None
                time.sleep(0.05)
    return server
