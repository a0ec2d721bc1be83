from datetime import datetime, time

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts import dates
from accounts.models import ApiToken, User


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


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        label=_("Name"), max_length=100, help_text=_("What it is for, e.g. the program that uses it.")
    )
    scope = forms.ChoiceField(label=_("Access"), choices=ApiToken.Scope.choices, initial=ApiToken.Scope.READ)
    expires = dates.DateField(
        label=_("Expires on"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("Leave empty for a token that does not expire."),
    )
    owner = forms.ModelChoiceField(
        label=_("For"), queryset=User.objects.none(), required=False, empty_label=_("Me")
    )

    def __init__(self, *args, user: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        if user.is_admin:
            self.fields["owner"].queryset = User.objects.filter(is_service_account=True, is_active=True)
        else:
            del self.fields["owner"]

    def clean_expires(self):
        day = self.cleaned_data["expires"]
        if day is not None and day <= timezone.localdate():
            raise forms.ValidationError(_("Choose a day after today, or none."))
        return day

    def token_fields(self) -> dict:
        """What ``api_token_create`` takes: whose token (the user's own unless an admin chose a service
        account), its name, scope and end (the end of the chosen day)."""
        data = self.cleaned_data
        day = data.get("expires")
        return {
            "user": data.get("owner") or self.user,
            "name": data["name"],
            "scope": data["scope"],
            "expires_at": None if day is None else timezone.make_aware(datetime.combine(day, time.max)),
        }


class ServiceAccountForm(forms.Form):
    username = forms.RegexField(
        label=_("User name"),
        max_length=150,
        regex=r"^[\w.@+-]+\Z",
        help_text=_("Letters, digits and @ . + - _ only."),
    )
    first_name = forms.CharField(label=_("Display name"), max_length=150, required=False)
    role = forms.ChoiceField(
        label=_("Acts as"),
        choices=[
            (r, label)
            for r, label in User.Role.choices
            if r in (User.Role.REP, User.Role.AGENT, User.Role.MANAGER)
        ],
    )
