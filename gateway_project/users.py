"""Console users and their roles: admins manage them (operators and compliance staff cannot)."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.shortcuts import render
from django.views import View

from audit.trail import snapshot
from gateway_project import roles
from gateway_project.console import RoleRequiredMixin, TrailedEditView, sorted_page

User = get_user_model()


class UserForm(forms.ModelForm):
    role = forms.ChoiceField(choices=[(r, r) for r in roles.ROLES])
    password = forms.CharField(
        widget=forms.PasswordInput, required=False, strip=False,
        help_text="Required for a new user; leave empty to keep the current password.",
    )  # fmt: skip

    class Meta:
        model = User
        fields = ["username", "email", "is_active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            held = sorted(roles.roles_of(self.instance))
            self.initial.setdefault("role", held[0] if held else roles.OPERATOR)

    def clean_password(self):
        password = self.cleaned_data.get("password")
        if not self.instance.pk and not password:
            raise forms.ValidationError("A new user needs a password.")
        if password:
            password_validation.validate_password(password, self.instance)
        return password

    def save(self, commit=True):
        user = super().save(commit=False)
        if self.cleaned_data.get("password"):
            user.set_password(self.cleaned_data["password"])
        user.save()
        user.groups.remove(*Group.objects.filter(name__in=roles.ROLES))
        user.groups.add(Group.objects.get(name=self.cleaned_data["role"]))
        return user


def _snapshot(user) -> dict:
    data = snapshot(user)
    data.pop("last_login", None)
    data["roles"] = sorted(roles.roles_of(user))
    return data


class UserListView(RoleRequiredMixin, View):
    needed_roles = roles.USERS

    def get(self, request):
        page, sort = sorted_page(request, User.objects.prefetch_related("groups"), {"username": "username"}, "username")
        return render(request, "console/user_list.html", {"page": page, "sort": sort})


class UserEditView(TrailedEditView):
    model = User
    form_class = UserForm
    template_name = "console/user_form.html"
    context_name = "edited"
    success_url_name = "console:users"
    needed_roles = write_roles = roles.USERS

    def snapshot(self, obj):
        obj._gateway_roles = None  # roles may have just changed
        return _snapshot(obj)

    def saved_message(self, obj):
        return f"User “{obj.get_username()}” saved."
