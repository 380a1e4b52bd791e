import json

from django.contrib.auth.decorators import login_required
from django.http import HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_http_methods

from .models import Note, Tag


@login_required
@require_http_methods(["GET", "POST"])
def note_list(request):
    if request.method == "POST":
        try:
            data = json.loads(request.body)
            title = data["title"].strip()
        except (ValueError, KeyError, AttributeError):
            return HttpResponseBadRequest("expected JSON with a title")
        if not title:
            return HttpResponseBadRequest("empty title")
        note = Note.objects.create(owner=request.user, title=title,
                                   body=data.get("body", ""),
                                   pinned=bool(data.get("pinned", False)))
        for name in data.get("tags", []):
            tag, _ = Tag.objects.get_or_create(name=name)
            note.tags.add(tag)
        return JsonResponse(note.to_dict(), status=201)
    notes = Note.objects.filter(owner=request.user).prefetch_related("tags")
    tag = request.GET.get("tag")
    if tag:
        notes = notes.filter(tags__name=tag)
    return JsonResponse({"notes": [n.to_dict() for n in notes]})


@login_required
def note_detail(request, pk):
    note = get_object_or_404(Note, pk=pk, owner=request.user)
    return JsonResponse(note.to_dict())
