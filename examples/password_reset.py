"""An app's back end starts a password reset for one of its users, and the user completes it.

The service sends no mail: the back end asks the admin API for a one-time token and delivers it however it likes
(here it is printed); the user then sends it with a new password to the public endpoint. With a server running and
an admin key made by `user-service create-admin-key --name my-backend --namespace my-app`:

    USER_SERVICE_URL=http://127.0.0.1:8000 ADMIN_KEY=usk_... python examples/password_reset.py my-app alice

Only the standard library is used, so the script runs anywhere.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def request(method: str, path: str, *, body: dict[str, Any] | None = None, key: str | None = None) -> Any:
    """One call to the service; the decoded JSON answer (None for 204). Raises RuntimeError with the error's code."""
    base = os.environ.get("USER_SERVICE_URL", "http://127.0.0.1:8000")
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    call = urllib.request.Request(base + path, data=data, headers=headers, method=method)  # noqa: S310 (http(s) only)
    try:
        with urllib.request.urlopen(call, timeout=10) as response:  # noqa: S310
            payload = response.read()
    except urllib.error.HTTPError as error:
        raise RuntimeError(json.loads(error.read()).get("code", str(error.code))) from None
    return json.loads(payload) if payload else None


def start_reset(admin_key: str, namespace: str, username: str) -> str:
    """The back end's side: a one-time reset token for the user, to deliver by email, SMS or anything else."""
    path = f"/admin/namespaces/{urllib.parse.quote(namespace)}/users/{urllib.parse.quote(username)}/password-reset"
    issued = request("POST", path, key=admin_key)
    return str(issued["token"])


def complete_reset(token: str, new_password: str) -> None:
    """The user's side: the token and a new password. Every session of theirs ends; they log in again."""
    request("POST", "/auth/password-reset", body={"token": token, "new_password": new_password})


def main() -> None:
    namespace, username = sys.argv[1:3]
    token = start_reset(os.environ["ADMIN_KEY"], namespace, username)
    print(f"the back end delivers this token to {username}: {token}")
    complete_reset(token, getpass.getpass("new password: "))
    print("password reset; log in with the new password")


if __name__ == "__main__":
    main()
