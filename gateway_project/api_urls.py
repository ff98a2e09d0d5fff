"""The management API under /api/v1/: one router for every app's viewsets."""

from rest_framework.routers import DefaultRouter

from audit.api import AdminActionViewSet, AuditRecordViewSet
from billing.api import BudgetViewSet, ModelPriceViewSet, UsageRecordViewSet
from keys.api import ApiKeyViewSet, ClientViewSet
from routing.api import AgentViewSet

router = DefaultRouter()
router.register("clients", ClientViewSet)
router.register("keys", ApiKeyViewSet)
router.register("agents", AgentViewSet)
router.register("prices", ModelPriceViewSet)
router.register("budgets", BudgetViewSet)
router.register("usage", UsageRecordViewSet)
router.register("audit", AuditRecordViewSet)
router.register("admin-actions", AdminActionViewSet)

urlpatterns = router.urls
