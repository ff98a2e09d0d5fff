"""Console forms for the redaction rules."""

from django import forms

from audit.models import RedactionRule

# What a built-in rule keeps whatever is posted: only switching it on or off is allowed.
BUILTIN_FIXED = ("name", "pattern", "replacement", "order")


class RedactionRuleForm(forms.ModelForm):
    sample = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Sample text",
        help_text="Try the rule on this text with “Test this rule”. It is never stored.",
    )

    class Meta:
        model = RedactionRule
        fields = ["name", "pattern", "replacement", "enabled", "order"]
        widgets = {"pattern": forms.TextInput(attrs={"class": "mono", "size": 60})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.builtin:
            for name in BUILTIN_FIXED:
                self.fields[name].disabled = True  # Django ignores posted values for disabled fields
