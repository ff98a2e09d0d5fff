"""The management API under /api/v1/: one router for every app's viewsets."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from audit.api import AdminActionViewSet, AuditRecordViewSet, QuarantinedRowViewSet, RedactionRuleViewSet
from audit.export_api import AuditExportViewSet
from audit.retention_api import AuditArchiveViewSet
from billing.api import BudgetAlertViewSet, BudgetViewSet, ModelPriceViewSet, UsageRecordViewSet
from billing.report_api import TopSpendersView, UsageReportView
from gateway_project.auth_event_api import AuthEventViewSet
from keys.api import (
    AgentRoleViewSet,
    ApiKeyViewSet,
    ClientViewSet,
    CostCenterViewSet,
    GuardrailViewSet,
    IdentityProviderViewSet,
    PlanViewSet,
    PolicyRuleViewSet,
    PolicyWhatIfViewSet,
)
from keys.token_api import CurrentTokenView, RotateTokenView
from routing.api import AgentViewSet, ResponseCacheViewSet, TargetViewSet
from routing.auto_route_api import AutoRouteRuleViewSet
from routing.route_api import CapabilityKeywordViewSet, PathRouteViewSet

router = DefaultRouter()
router.register("cost-centers", CostCenterViewSet)
router.register("plans", PlanViewSet)
router.register("clients", ClientViewSet)
router.register("keys", ApiKeyViewSet)
router.register("agent-roles", AgentRoleViewSet)
router.register("policy-rules", PolicyRuleViewSet)
router.register("guardrails", GuardrailViewSet)
router.register("identity-providers", IdentityProviderViewSet)
router.register("policy-what-ifs", PolicyWhatIfViewSet)
router.register("agents", AgentViewSet)
router.register("targets", TargetViewSet)
router.register("response-cache", ResponseCacheViewSet, basename="response-cache")
router.register("prices", ModelPriceViewSet)
router.register("budgets", BudgetViewSet)
router.register("alerts", BudgetAlertViewSet)
router.register("usage", UsageRecordViewSet)
router.register("audit-exports", AuditExportViewSet)  # before "audit", whose routes would take its paths
router.register("audit-archives", AuditArchiveViewSet)  # before "audit" too
router.register("audit-quarantine", QuarantinedRowViewSet)
router.register("audit", AuditRecordViewSet)
router.register("admin-actions", AdminActionViewSet)
router.register("redaction-rules", RedactionRuleViewSet)
router.register("routes", PathRouteViewSet)
router.register("capability-keywords", CapabilityKeywordViewSet)
router.register("auto-route-rules", AutoRouteRuleViewSet)
router.register("auth-events", AuthEventViewSet)

urlpatterns = [
    path("reports/usage/", UsageReportView.as_view(), name="report-usage"),
    path("reports/top-spenders/", TopSpendersView.as_view(), name="report-top-spenders"),
    path("token/", CurrentTokenView.as_view(), name="api-token"),
    path("token/rotate/", RotateTokenView.as_view(), name="api-token-rotate"),
    *router.urls,
]
