"""What pages name and offer to pick: counties, customer managers and task
types as pick lists, and managers' names by id. One query each, read only.

People and places are ordered by the pinyin of their names (khhf.names), as
a phone book is. `where` narrows the rows to what the viewer may see (the
web's access scope, webui.access.scope); None is every row.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, contains_eager

from khhf.models import County, Manager, TaskType, User
from khhf.names import by_manager_name, by_pinyin


def counties(session: Session, where=None) -> list[County]:
    """The counties, by the pinyin of their names."""
    query = select(County)
    if where is not None:
        query = query.where(where)
    return by_pinyin(session.scalars(query), lambda c: c.name)


def managers(session: Session, where=None, *, county_id: int | None = None,
             active_only: bool = False, except_id: int | None = None) -> list[Manager]:
    """Customer managers, with their users, as lists show them (active ones
    first, by the pinyin of their names): of `county_id` if given, only the
    active ones if `active_only`, without manager `except_id`."""
    query = select(Manager).join(User, User.id == Manager.user_id).options(
        contains_eager(Manager.user))
    if where is not None:
        query = query.where(where)
    if county_id is not None:
        query = query.where(Manager.county_id == county_id)
    if active_only:
        query = query.where(Manager.status == "active")
    if except_id is not None:
        query = query.where(Manager.id != except_id)
    return by_manager_name(session.scalars(query))


def manager_names(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    """{manager id: the person's name} for the managers `ids` names (None skipped)."""
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return dict(session.execute(select(Manager.id, User.display_name)
                                .join(User, User.id == Manager.user_id)
                                .where(Manager.id.in_(ids))).all())


def task_types(session: Session) -> list[TaskType]:
    """Every task type, oldest first (the standard ones lead)."""
    return list(session.scalars(select(TaskType).order_by(TaskType.id)))
