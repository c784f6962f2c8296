"""SMS for administrators: the outbox and inbox as stored (numbers masked),
and a form to type a message as if a mobile phone sent it: the offline demo
when no SMSC is configured, the twin of `khhf sms inject`."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField, TextAreaField

from khhf.services import sms, sms_feedback
from webui.access import allow, client_ip
from webui.db import get_db, writing
from webui.i18n import SMS_REPLY_OUTCOME_LABELS, label

bp = Blueprint("sms", __name__, url_prefix="/admin/sms")


class InjectForm(FlaskForm):
    mobile = StringField(_l("From mobile"), description=_l("The number the message comes "
                                                         "from, e.g. a manager's mobile."))
    text = TextAreaField(_l("Message"), description=_l("As typed on the phone, e.g. 1 or "
                                                       "6 1201 1430."))


def _page(form: InjectForm):
    db = get_db()
    settings = current_app.extensions["khhf_settings"]
    return render_template("sms/index.html", form=form,
                           outbox=sms.listing(db, "out", limit=100),
                           inbox=sms.listing(db, "in", limit=100),
                           smsc=settings.smsc_host)


@bp.route("/")
@allow("admin")
def index():
    return _page(InjectForm())


@bp.route("/inject", methods=["POST"])
@allow("admin")
def inject():
    form = InjectForm()
    if form.validate_on_submit():
        settings = current_app.extensions["khhf_settings"]
        try:
            with writing() as w:
                # the reply is handled as one from the SMSC would be
                row = sms_feedback.receive(w.session, form.mobile.data, form.text.data,
                                           user=current_user, via="web", ip=client_ip(),
                                           settings=settings)
        except sms.SmsError as exc:
            form.mobile.errors = list(form.mobile.errors) + [_problem(exc)]
            return _page(form)
        flash(gettext("The message is stored as received from that phone."), "success")
        if row.reply_outcome:
            flash(gettext("Handled as a reply: %(what)s.",
                          what=label(SMS_REPLY_OUTCOME_LABELS, row.reply_outcome)), "info")
        return redirect(url_for("sms.index"))
    return _page(form)


def _problem(exc: sms.SmsError) -> str:
    """The service's refusal, in the viewer's language."""
    return gettext(exc.problem, **exc.params) if exc.problem else str(exc)
