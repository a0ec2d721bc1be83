"""Forms parse and validate input; views hand ``cleaned_data`` to a service. No form saves a model."""

import re

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.pickers import StaffChoiceField, StaffFilterField
from crm.models import Customer, Source
from surveys.models import COMMENT_MAX_LENGTH, Survey, SurveyInvitation
from surveys.services import SURVEY_FIELDS

ASCII_DIGITS = re.compile(r"[0-9]{1,2}")

# Public form
# ---------------------------------------------------------------------------------------------------------


class ScoreForm(forms.Form):
    """One score of the survey's scale, in ASCII digits; every kind of bad input gets the same message."""

    score = forms.CharField(max_length=4, strip=True)

    def __init__(self, *args, survey: Survey, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.survey = survey
        self.scale_message = _("Choose a score from %(low)s to %(high)s.") % {
            "low": survey.scale_min,
            "high": survey.scale_max,
        }
        self.fields["score"].error_messages = dict.fromkeys(
            ("required", "max_length", "null_characters_not_allowed"), self.scale_message
        )

    def clean_score(self) -> int:
        raw = self.cleaned_data["score"]
        if not ASCII_DIGITS.fullmatch(raw) or int(raw) not in self.survey.scores:
            raise ValidationError(self.scale_message)
        return int(raw)


class CommentForm(forms.Form):
    comment = forms.CharField(
        required=False, strip=True, widget=forms.Textarea(attrs={"rows": 5, "maxlength": COMMENT_MAX_LENGTH})
    )

    def clean_comment(self) -> str:
        comment = self.cleaned_data["comment"]
        if len(comment) > COMMENT_MAX_LENGTH:
            raise ValidationError(
                gettext("Please keep your comment under %(max)s characters (it has %(length)s).")
                % {"max": f"{COMMENT_MAX_LENGTH:,}", "length": f"{len(comment):,}"}
            )
        return comment


# Manager pages
# ---------------------------------------------------------------------------------------------------------


class SurveyForm(forms.ModelForm):
    """A survey's settings and texts; kind, scale and trigger are fixed once created."""

    class Meta:
        model = Survey
        fields = list(SURVEY_FIELDS)
        widgets = {
            name: forms.TextInput(attrs={"maxlength": 300})
            for name in SURVEY_FIELDS
            if name.startswith(("question", "followup"))
        }


class InvitationFilterForm(forms.Form):
    survey = forms.ModelChoiceField(
        label=_("Survey"), queryset=Survey.objects.all(), required=False, empty_label=_("All surveys")
    )
    status = forms.ChoiceField(
        label=_("Status"), choices=[("", _("All statuses")), *SurveyInvitation.Status.choices], required=False
    )
    reason = forms.ChoiceField(
        label=_("Why not sent"),
        choices=[("", _("Any reason")), *SurveyInvitation.Reason.choices],
        required=False,
    )
    days = forms.TypedChoiceField(
        label=_("Created in the last"),
        # The default (90 days) comes first, so an empty filter shows what is applied.
        choices=[(90, _("90 days")), (30, _("30 days")), (365, _("year")), (0, _("any time"))],
        coerce=int,
        required=False,
        empty_value=90,
    )


class ResponseFilterForm(forms.Form):
    BUCKETS = [
        ("", _("All answers")),
        ("negative", _("Low (detractors, dissatisfied, difficult)")),
        ("neutral", _("Middle")),
        ("positive", _("High (promoters, satisfied, easy)")),
    ]
    survey = forms.ModelChoiceField(
        label=_("Survey"), queryset=Survey.objects.all(), required=False, empty_label=_("All surveys")
    )
    bucket = forms.ChoiceField(label=_("Score"), choices=BUCKETS, required=False)
    owner = StaffFilterField("owner-filter", label=_("Owner"), required=False)
    with_comment = forms.BooleanField(label=_("Only with a comment"), required=False)


class CampaignForm(forms.Form):
    survey = forms.ModelChoiceField(label=_("Survey"), queryset=Survey.objects.none())
    status = forms.ChoiceField(
        label=_("Customer status"),
        choices=[("", _("All statuses")), *Customer.Status.choices],
        required=False,
        initial=Customer.Status.ACTIVE,
    )
    source = forms.ChoiceField(
        label=_("Source"), choices=[("", _("All sources")), *Source.choices], required=False
    )
    segment = forms.ChoiceField(
        label=_("Segment"), choices=[("", _("All segments")), *Customer.Segment.choices], required=False
    )
    owner = StaffChoiceField("owner-filter", label=_("Owner"), required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["survey"].queryset = Survey.objects.filter(is_active=True).exclude(
            trigger=Survey.Trigger.TICKET_SOLVED
        )

    def filters(self) -> dict:
        """The customer filters as JSON-safe values (owner as its id)."""
        data = self.cleaned_data
        owner = data.get("owner")
        return {
            "status": data.get("status") or None,
            "source": data.get("source") or None,
            "segment": data.get("segment") or None,
            "owner": owner.pk if owner else None,
        }
