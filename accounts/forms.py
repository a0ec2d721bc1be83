from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.utils.translation import gettext_lazy as _


class LoginForm(AuthenticationForm):
    username = forms.CharField(
        label=_("Username"),
        max_length=150,
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "username"}),
    )


class FeedbackForm(forms.Form):
    rating = forms.TypedChoiceField(
        label=_("How useful is the CRM for your work?"),
        choices=[(n, str(n)) for n in range(1, 6)],
        coerce=int,
        widget=forms.RadioSelect,
        error_messages={"required": _("Pick a rating from 1 to 5.")},
    )
    comment = forms.CharField(
        label=_("What would make it better?"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    page = forms.CharField(required=False, max_length=300, widget=forms.HiddenInput)


class SecurityEventFilterForm(forms.Form):
    kind = forms.ChoiceField(label=_("Kind"), required=False)

    def __init__(self, *args, **kwargs) -> None:
        from accounts.models import SecurityEvent
        from accounts.pickers import StaffChoiceField

        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [("", _("All kinds")), *SecurityEvent.Kind.choices]
        # Typed to find: a company's log names every person who ever signed in.
        self.fields["user"] = StaffChoiceField("staff-filter", label=_("User"), required=False)


class TotpCodeForm(forms.Form):
    """One 6-digit code from the authenticator app."""

    code = forms.CharField(
        label=_("6-digit code"),
        max_length=10,
        widget=forms.TextInput(
            attrs={"autofocus": True, "autocomplete": "one-time-code", "inputmode": "numeric"}
        ),
    )


class SecondStepForm(TotpCodeForm):
    """The second step of a sign-in: a code from the authenticator app, or one of the recovery codes."""

    code = forms.CharField(
        label=_("Code from your app, or a recovery code"),
        max_length=20,
        widget=forms.TextInput(
            attrs={"autofocus": True, "autocomplete": "one-time-code", "spellcheck": "false"}
        ),
    )
