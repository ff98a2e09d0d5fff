"""The management API under /api/v1/: one router for every app's viewsets."""

from rest_framework.routers import DefaultRouter

urlpatterns = []
router = DefaultRouter()
urlpatterns += router.urls
