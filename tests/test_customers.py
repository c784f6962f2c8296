"""Customers (客户管理): search, edit, do-not-call, reassignment and its
history, through the service and the pages, within each role's scope."""

import pytest
from sqlalchemy import select

from khhf import audit
from khhf.models import AuditLog, Customer, CustomerAssignment, Manager, Task, User
from khhf.services import ValidationError, customers, dnc, hotline
from simkit import factories
from simkit.web import log_in_as, make_app, session_for


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app, _ = make_app(tmp_path_factory.mktemp("customers"), WTF_CSRF_ENABLED=False)
    return app


def _manager(s, username):
    return s.scalar(select(Manager).join(User).where(User.username == username))


def _customer_of(s, username):
    manager = _manager(s, username)
    return s.scalar(select(Customer).where(Customer.manager_id == manager.id)
                    .order_by(Customer.id))


def test_search_by_name_and_by_part_of_the_number_with_keyset_pages(app):
    with session_for(app) as s:
        county = _manager(s, "manager1").county
        for i in range(7):
            factories.customer(s, county, f"1590000{i:04d}", name=f"检索{i}")
        s.commit()
        found = customers.search(s, q="检索")
        assert [c.name for c in found] == [f"检索{i}" for i in reversed(range(7))]
        page1 = customers.search(s, q="检索", limit=3)
        page2 = customers.search(s, q="检索", after=page1[-1].id, limit=3)
        assert [c.name for c in page1 + page2] == [f"检索{i}" for i in (6, 5, 4, 3, 2, 1)]
        assert [c.name for c in customers.search(s, q="159-0000-0003")] == ["检索3"]
        assert [c.name for c in customers.search(s, q="15900000005")] == ["检索5"]


def test_reassign_ends_the_old_assignment_moves_open_tasks_and_the_hotline_follows(app):
    with session_for(app) as s:
        customer = _customer_of(s, "manager1")
        old, new = _manager(s, "manager1"), _manager(s, "manager2")
        open_before = s.scalars(select(Task).where(Task.customer_id == customer.id,
                                                   Task.status == "pending")).all()
        customers.reassign(s, None, "", customer, new.id)
        s.commit()
        history = customers.history(s, customer)
        assert [a.manager_id for a in history][:2] == [new.id, old.id]
        assert history[0].ended_at is None and history[1].ended_at is not None
        assert s.scalars(select(CustomerAssignment).where(
            CustomerAssignment.customer_id == customer.id,
            CustomerAssignment.ended_at.is_(None))).all() == [history[0]]
        for task in open_before:
            s.refresh(task)
            assert task.manager_id == new.id
        routing = hotline.start_call(s, caller=customer.phone,
                                     unified_number=customer.county.primary_number,
                                     uniqueid="reassign-1")
        assert routing.manager_id == new.id
        entry = s.scalar(select(AuditLog).where(AuditLog.action == "reassign_customer"))
        assert customer.phone not in entry.object_name + entry.detail
        assert customer.phone[-4:] in entry.object_name
        assert audit.load_detail(entry)["changes"]["manager"][1].endswith("(D002)")
        with pytest.raises(ValidationError):
            customers.reassign(s, None, "", customer, new.id)  # already theirs


def test_do_not_call_needs_a_reason_and_is_audited(app):
    with session_for(app) as s:
        customer = _customer_of(s, "manager2")
        with pytest.raises(ValidationError) as caught:
            dnc.set_for_customer(s, None, "", customer, True, "  ")
        assert caught.value.problems[0].field == "reason"
        dnc.set_for_customer(s, None, "", customer, True, "客户电话要求")
        s.commit()
        assert s.get(Customer, customer.id).do_not_call
        entry = s.scalar(select(AuditLog).where(AuditLog.action == "set_do_not_call"))
        assert audit.load_detail(entry) == {"do_not_call": True, "why": "客户电话要求"}
        assert customer.phone not in entry.object_name
        dnc.set_for_customer(s, None, "", customer, False, "客户同意回访")
        s.commit()


def test_supervisor_edits_reassigns_and_sets_do_not_call_through_the_pages(app):
    client = app.test_client()
    log_in_as(client, app, "supervisor")
    with session_for(app) as s:
        customer = _customer_of(s, "manager2")
        target = _manager(s, "manager1")
        cid = customer.id
    html = client.get("/customers/").get_data(as_text=True)
    assert customer.phone not in html and customer.phone[:3] + "****" in html  # masked list
    detail = client.get(f"/customers/{cid}").get_data(as_text=True)
    assert customer.phone in detail  # whole on the customer's page
    response = client.post(f"/customers/{cid}/edit", data={
        "name": "改名", "phone": "+86 138-0000-7777", "note": "VIP"})
    assert response.status_code == 302
    response = client.post(f"/customers/{cid}/edit", data={
        "name": "改名", "phone": "12", "note": ""})
    assert "Not a phone number" in response.get_data(as_text=True) or \
        "电话号码" in response.get_data(as_text=True)
    assert client.post(f"/customers/{cid}/do-not-call",
                       data={"do_not_call": "1", "reason": "投诉"}).status_code == 302
    assert client.post(f"/customers/{cid}/manager",
                       data={"manager_id": str(target.id)}).status_code == 302
    with session_for(app) as s:
        c = s.get(Customer, cid)
        assert (c.name, c.phone, c.note, c.do_not_call, c.manager_id) == \
            ("改名", "13800007777", "VIP", True, target.id)
    page = client.get(f"/customers/{cid}").get_data(as_text=True)
    assert 'id="history"' in page and "reassign" in page


def test_manager_sees_own_customers_read_only(app):
    client = app.test_client()
    log_in_as(client, app, "manager1")
    with session_for(app) as s:
        own = _customer_of(s, "manager1")
        others = s.scalar(select(Customer).where(Customer.manager_id != own.manager_id))
    html = client.get("/customers/").get_data(as_text=True)
    assert own.name in html
    page = client.get(f"/customers/{own.id}")
    assert page.status_code == 200 and 'id="edit"' not in page.get_data(as_text=True)
    assert client.get(f"/customers/{others.id}").status_code == 404
    assert client.post(f"/customers/{own.id}/edit", data={"name": "x"}).status_code == 403
