"""`megastation users`: accounts of the web console and HTTP API (served by `serve`)."""

from __future__ import annotations

import click

from megastation.cli import main
from megastation.cli.common import Context, pass_ctx
from megastation.store import web as web_records


@main.group("users", invoke_without_command=True)
@click.pass_context
def users_group(click_ctx: click.Context) -> None:
    """Console and API accounts (lists them without a subcommand)."""
    if click_ctx.invoked_subcommand is None:
        rows = web_records.list_users(click_ctx.obj.store)
        if not rows:
            click.echo("(none)")
        for r in rows:
            click.echo(
                f"{r['name']}  {r['role']}  tokens {r['api_tokens']}  since {r['created_at']}"
            )


@users_group.command("add")
@click.argument("name")
@click.option(
    "--role", type=click.Choice(web_records.ROLES), required=True, help="viewer: read only."
)
@click.option("--password", help="The password (prompted twice when left out).")
@pass_ctx
def users_add(ctx: Context, name: str, role: str, password: str | None) -> None:
    """Add an account NAME (or change its role and password; its logins end)."""
    from megastation.web.auth import MIN_PASSWORD_LEN, add_user  # lazy: starlette

    if not name.strip() or any(c.isspace() for c in name):
        raise click.BadParameter("must be non-empty without spaces", param_hint="NAME")
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LEN:
        raise click.BadParameter(f"at least {MIN_PASSWORD_LEN} characters", param_hint="--password")
    new = add_user(ctx.store, name, role, password)
    click.echo(f"{name}: {role} ({'added' if new else 'updated'})")


@users_group.command("remove")
@click.argument("name")
@pass_ctx
def users_remove(ctx: Context, name: str) -> None:
    """Remove an account with its logins and API tokens."""
    if not web_records.remove_user(ctx.store, name):
        raise click.ClickException(f"no user {name!r}")
    click.echo(f"{name}: removed")


@users_group.command("token")
@click.argument("name")
@click.option("--label", help="What the token is for, e.g. the script's name.")
@pass_ctx
def users_token(ctx: Context, name: str, label: str | None) -> None:
    """Make an API token for NAME's scripts (printed once: `Authorization: Bearer TOKEN`)."""
    from megastation.web.auth import new_api_token  # lazy: starlette

    try:
        token = new_api_token(ctx.store, name, label)
    except LookupError:
        raise click.ClickException(f"no user {name!r}") from None
    click.echo(token)
