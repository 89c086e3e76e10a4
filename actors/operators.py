"""The broker's operators: their roles, what each role may do, and ``exness-actors operator``.

Operators are the broker's staff, kept apart from the traders: their own table (``operators``,
migration 0013), their own sign-in (``POST /api/v1/admin/signin``) and their own kind of token
(:meth:`actors.auth_tokens.TokenIssuer.issue_operator`), which never trades. A trader's token never
reaches ``/api/v1/admin``.

Roles, least to most allowed (:data:`PERMISSIONS`):

* ``viewer`` — reads: house P&L, exposure, accounts, symbols, the audit log;
* ``risk`` — reads, halts and resumes symbols, force-closes positions;
* ``admin`` — everything: also changes instruments and adjusts account balances.

Operators are created on the command line, never over HTTP (there is no way to become an
operator from the network): ``exness-actors operator create EMAIL --role R`` with the password
from ``EXNESS_OPERATOR_PASSWORD`` or a prompt — never an argument, which would sit in the shell's
history and in ``ps``. ``list``, ``disable``, ``enable`` and ``set-role`` complete the set;
disabling revokes the operator's refresh tokens at once, and their access tokens stop working at
their next request (each admin request checks the operator's row).
"""

from __future__ import annotations

import getpass
import os
import re
import sys
import time
from typing import Any, Callable, Optional

import trio

from actors.store.base import OPERATOR_ROLES, DuplicateEmail, OperatorRecord

__all__ = ["ROLES", "PERMISSIONS", "READ", "HALT", "CLOSE", "INSTRUMENT", "ADJUST", "allowed",
           "PASSWORD_ENV", "MIN_PASSWORD", "MAX_PASSWORD", "normalised_email", "run_command"]

ROLES = OPERATOR_ROLES
#: what a route needs
READ = "read"
HALT = "halt"            # halt and resume a symbol
CLOSE = "close"          # force-close a position
INSTRUMENT = "instrument"
ADJUST = "adjust"        # fund or debit an account
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({READ}),
    "risk": frozenset({READ, HALT, CLOSE}),
    "admin": frozenset({READ, HALT, CLOSE, INSTRUMENT, ADJUST}),
}
PASSWORD_ENV = "EXNESS_OPERATOR_PASSWORD"
MIN_PASSWORD = 12
MAX_PASSWORD = 128
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[^@\s\x00-\x1f\x7f]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$")


def allowed(role: str, permission: str) -> bool:
    return permission in PERMISSIONS.get(role, frozenset())


def normalised_email(value: str) -> Optional[str]:
    """The e-mail trimmed and lower-cased, or None when it is not an address."""
    email = value.strip().lower()
    return email if len(email) <= 254 and _EMAIL.match(email) else None


class CommandError(Exception):
    """A mistake on the command line: printed, exit code 1."""


def _password(read_secret: Callable[[str], str], interactive: bool) -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        if not interactive:
            raise CommandError(f"no password: set {PASSWORD_ENV} or run this in a terminal to be asked "
                               "(a password is never taken as an argument)")
        password = read_secret("Password for the new operator: ")
        if read_secret("Again: ") != password:
            raise CommandError("the two passwords differ; nothing was created")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise CommandError(f"the password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def _hasher(cfg: Any) -> Any:
    """argon2id with the gateway's [auth] parameters (the sign-in verifies with the same)."""
    from argon2 import PasswordHasher, Type

    from actors.gateway import GatewaySettings   # here: the gateway imports this module
    settings = GatewaySettings.from_config(cfg)
    return PasswordHasher(time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib,
                          parallelism=settings.argon2_parallelism, type=Type.ID)


def _describe(operator: OperatorRecord) -> str:
    state = "disabled" if operator.disabled else "active"
    return f"{operator.operator_id:>6}  {operator.email:<40} {operator.role:<7} {state}"


async def _run(cfg: Any, action: str, email: Optional[str], role: Optional[str], password_hash: Optional[str]) -> str:
    from actors.store.base import open_store

    store = await open_store(cfg)
    try:
        if action == "create":
            assert email is not None and role is not None and password_hash is not None
            try:
                operator = await store.create_operator(email, password_hash, role=role, created_at=time.time_ns())
            except DuplicateEmail:
                raise CommandError(f"an operator {email} exists already (set-role or enable it)") from None
            return f"created operator {operator.operator_id} {operator.email} ({operator.role})"
        if action == "list":
            operators = await store.operators()
            return "\n".join(_describe(operator) for operator in operators) or "no operators yet"
        assert email is not None
        changes: dict[str, dict[str, Any]] = {"set-role": {"role": role}, "disable": {"disabled": True},
                                              "enable": {"disabled": False}}
        updated = await store.update_operator(email, now=time.time_ns(), **changes[action])
        if updated is None:
            raise CommandError(f"no operator {email}")
        return _describe(updated)
    finally:
        await store.close()


def run_command(cfg: Any, args: Any, *, read_secret: Callable[[str], str] = getpass.getpass,
                interactive: Optional[bool] = None) -> int:
    """``exness-actors operator ACTION …`` (``args``: ``action``, ``email``, ``role``); prints the
    outcome, answers the exit code (0 done, 1 refused)."""
    try:
        email = None
        if args.action != "list":
            email = normalised_email(args.email or "")
            if email is None:
                raise CommandError(f"{args.email!r} is not an e-mail address")
        role = getattr(args, "role", None)
        if args.action in ("create", "set-role") and role not in ROLES:
            raise CommandError(f"--role must be one of {', '.join(ROLES)}")
        password_hash = None
        if args.action == "create":
            tty = sys.stdin.isatty() if interactive is None else interactive
            password_hash = _hasher(cfg).hash(_password(read_secret, tty))
        print(trio.run(_run, cfg, args.action, email, role, password_hash))
        return 0
    except CommandError as error:
        print(f"exness-actors operator {args.action}: {error}", file=sys.stderr)
        return 1
