from django.conf import settings
from django.db import models


class Tag(models.Model):
    name = models.SlugField(max_length=40, unique=True)

    def __str__(self):
        return self.name


class Note(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="notes")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    pinned = models.BooleanField(default=False)
    tags = models.ManyToManyField(Tag, blank=True, related_name="notes")

    class Meta:
        ordering = ["-pinned", "-created", "-id"]

    def __str__(self):
        return self.title

    @property
    def summary(self):
        """The first line of the body, at most 40 characters."""
        first = self.body.strip().splitlines()[0] if self.body.strip() else ""
        return first if len(first) <= 40 else first[:39] + "\u2026"

    def to_dict(self):
        return {
            "id": self.pk,
            "title": self.title,
            "summary": self.summary,
            "pinned": self.pinned,
            "tags": sorted(t.name for t in self.tags.all()),
        }
