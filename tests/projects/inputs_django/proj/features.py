from django.conf import settings

FEATURE = settings.FEATURE  # read from the settings when this is imported
